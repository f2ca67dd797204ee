"""Binary COPY batches into a PostgreSQL table: how the columnar lane's batches land.

A batch arrives as one whole binary COPY stream (header, tuples, trailer, encoded by pgpq). It
goes straight into the table (``append``, ``replace``'s shadow) or into the upsert stage. Columns
the lane carries as text (``numeric``, ``interval``, arrays…: :mod:`pgferry.arrow`) first land
in a text staging table and reach their own types through the server's cast, which is exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg

from pgferry import sql, sql_arrow
from pgferry.engine.sinks.base import Reject
from pgferry.engine.sinks.postgres_errors import load_failure
from pgferry.errors import LoadError
from pgferry.sql import TableName

if TYPE_CHECKING:
    from pgferry.engine.sinks.postgres import PostgresSink

__all__ = ["CopyBatch", "copy", "prepare", "write_isolating"]

TEXT_STAGE = "pgferry_text_stage"

# What one refused row causes on COPY (a value the column's type or a constraint refuses, a
# text the server cannot cast); anything else is not narrowed down by halving the batch.
_ROW_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


class CopyBatch(Protocol):
    """A batch that can be written as binary COPY, and halved to find a refused row."""

    rows: int

    def chunks(self) -> Sequence[bytes]:
        """The whole COPY stream: header, tuples, trailer."""

    def halves(self) -> tuple[CopyBatch, CopyBatch]:
        """The first and the second half of the rows, as batches of their own."""

    def first_row(self) -> dict[str, Any]:
        """The first row, as a dict for the rejects table."""


async def prepare(
    conn: asyncpg.Connection,
    columns: Sequence[str],
    types: Mapping[str, str],
    carried: Sequence[str],
) -> dict[str, str]:
    """Create the text staging table when some columns are carried as text.

    Returns:
        The carried columns and the types they are cast to.
    """
    cast = {c: types[c] for c in carried}
    if cast:
        stage = [(c, "text" if c in cast else types[c]) for c in columns]
        await conn.execute(f"DROP TABLE IF EXISTS pg_temp.{sql.quote_ident(TEXT_STAGE)}")
        await conn.execute(sql.create_keys_table(TEXT_STAGE, stage))
    return cast


async def copy(
    sink: PostgresSink,
    payload: Sequence[bytes],
    rows: int,
    *,
    carried: Mapping[str, str],
    stage: str,
) -> int:
    """COPY one batch (inside the caller's transaction); return the rows written.

    Raises:
        LoadError: The stream held another number of rows than the batch (an encoder fault:
            never committed).
    """
    if not rows:
        return 0
    conn, cols = sink.conn, list(sink.columns)

    async def chunks() -> Any:
        for chunk in payload:
            yield chunk

    into = TEXT_STAGE if carried else stage if sink.upsert else ""
    status = await conn.copy_to_table(
        into or sink.copy_into.name,
        schema_name=None if into else sink.copy_into.schema,
        columns=cols,
        source=chunks(),
        format="binary",
    )
    copied = int(str(status).split()[-1])
    if copied != rows:
        raise LoadError(f"binary COPY wrote {copied} rows of a batch of {rows}", job=sink.job.name)
    if carried:
        target: TableName | str = stage if sink.upsert else sink.copy_into
        status = await conn.execute(
            sql_arrow.insert_cast_from(target, TEXT_STAGE, cols, dict(carried))
        )
        await conn.execute(sql.truncate(TEXT_STAGE))
        if not sink.upsert:
            return int(status.split()[-1])
    elif not sink.upsert:
        return copied
    merged = await conn.execute(
        sql.merge_stage(sink.copy_into, stage, sink.columns, sink.job.upsert_key or [])
    )
    await conn.execute(sql.truncate(stage))
    return int(merged.split()[-1])


async def write_isolating(
    sink: PostgresSink,
    batch: CopyBatch,
    *,
    carried: Mapping[str, str],
    stage: str,
) -> tuple[int, list[Reject]]:
    """:func:`copy` in a savepoint; when the target refuses a row and ``max_rejects`` allows,
    halve the batch until the refused rows are isolated (about ``b * log2(n)`` extra COPYs
    for ``b`` bad rows among ``n``, only on failure). Returns the rows written and the rejects.
    """
    try:
        async with sink.conn.transaction():
            return await copy(sink, batch.chunks(), batch.rows, carried=carried, stage=stage), []
    except _ROW_ERRORS as exc:
        if sink.job.max_rejects == 0:
            raise  # named by load_failure, with the column the server reports
        if batch.rows == 1:
            err = load_failure(
                exc, job=sink.job.name, table=sink.table, batch=None, columns=sink.columns
            )
            message = f"{type(exc).__name__}: {exc}"
            return 0, [("load", type(exc).__name__, message, err.column, batch.first_row())]
        first, second = batch.halves()
        w1, r1 = await write_isolating(sink, first, carried=carried, stage=stage)
        w2, r2 = await write_isolating(sink, second, carried=carried, stage=stage)
        return w1 + w2, r1 + r2
