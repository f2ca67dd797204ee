"""Array lower bounds on the rows lane: checked value by value, refused with a clear error.

A PostgreSQL array carries a lower bound per dimension (``'[0:2]={1,2,3}'`` starts at 0).
asyncpg decodes an array into a Python list, which has no lower bound, and writes every list
numbered from 1; its array codecs cannot be replaced (``set_type_codec`` takes scalar and
composite types only). Decoded rows therefore cannot carry the bounds, and moving such a value
on the rows lane would renumber it silently.

The bounds belong to each value, not to the column's type: ``integer[]`` says nothing about
them, and refusing every array column up front would refuse the usual arrays, which round-trip
exactly. So the rows lane reads one more column, computed by the server for every row
(:func:`pgferry.sql_bounds.array_bounds_probe`): NULL when every array of the row starts at 1, else
which one does not. :func:`strip_probe` drops that column from each batch and refuses a batch
holding such an array with an :class:`~pgferry.errors.ExtractError` naming the column, the
batch and the array's dimensions. The run stops as on any read error: what was committed stays,
nothing is written renumbered, and a rerun stops at the same row until the source query
renumbers the array (``a[:]``) or reads it as text.

The binary pipe (no transform) copies arrays undecoded, bounds included, and needs no check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from pgferry import schema, sql
from pgferry.engine.plan import SourcePlan
from pgferry.errors import ExtractError
from pgferry.sql_bounds import array_bounds_probe

__all__ = ["array_columns", "checked_query", "strip_probe"]


async def array_columns(conn: asyncpg.Connection, plan: SourcePlan) -> list[str]:
    """Names of the source columns whose values are arrays, in column order."""
    # A domain over an array, at any depth, holds arrays too (its values decode to lists).
    bases = await schema.base_types(conn, [c.type for c in plan.columns])
    return [c.name for c, base in zip(plan.columns, bases, strict=True) if base.endswith("[]")]


async def checked_query(conn: asyncpg.Connection, plan: SourcePlan) -> tuple[str, list[str]]:
    """The rows lane's source query and the array columns its last column checks.

    Returns:
        ``plan.query`` with :func:`pgferry.sql_bounds.array_bounds_probe` as one more, last,
        column,
        and the names of the arrays it checks; ``plan.query`` and ``[]`` when the source has
        no array column.
    """
    arrays = await array_columns(conn, plan)
    if not arrays:
        return plan.query, []
    query = sql.ordered_source(
        plan.base,
        [c.name for c in plan.columns],
        where=plan.where,
        order_by=plan.position_columns,
        probe=array_bounds_probe(arrays),
    )
    return query, arrays


def strip_probe(
    rows: Sequence[asyncpg.Record], arrays: Sequence[str], *, job: str, batch: int
) -> list[tuple[Any, ...]]:
    """The batch without its probe column; refused if an array in it does not start at 1.

    Args:
        rows: Rows read with :func:`checked_query`'s query (the probe is their last value).
        arrays: The array columns the probe checks, as :func:`checked_query` returned them.

    Raises:
        ExtractError: A row holds an array whose lower bound is not 1 in some dimension;
            the error names the column, the batch and the array's dimensions.
    """
    n = len(rows[0]) - 1
    for number, row in enumerate(rows, start=1):
        found = row[n]
        if found is None:
            continue
        index, dims = str(found).split(" ", 1)
        name = arrays[int(index)]
        quoted = sql.quote_ident(name)
        raise ExtractError(
            f"column {name!r} holds an array numbered {dims} (row {number} of the batch), "
            "not from 1, and decoded rows cannot keep array lower bounds: it would arrive "
            f"renumbered. Select it renumbered ({quoted}[:]) or as text ({quoted}::text) in "
            "a source query, or run without a transform: the binary pipe copies the bounds",
            job=job,
            batch=batch,
            column=name,
        )
    return [row[:n] for row in rows]  # a slice of a record is a tuple
