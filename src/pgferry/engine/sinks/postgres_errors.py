"""Load errors: what the target refused, named by table, batch, column and row.

The driver's errors rarely say which column or row they are about. :func:`load_failure` reads
it from the error's fields and context; :func:`explain_encode_failure` probes the batch column
by column when asyncpg could not encode a Python value at all. The writer uses both to describe
failed batches and rejected rows, the pipelines to report a batch that could not be written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import asyncpg

from pgferry import sql
from pgferry.errors import LoadError, PgferryError, TransientLoadError
from pgferry.retry import is_transient
from pgferry.sql import TableName

__all__ = ["explain_encode_failure", "load_failure"]

_ARG = re.compile(r"query argument \$(\d+)")
_WHERE_COLUMN = re.compile(r'column (\w+|"(?:[^"]|"")+")')


def load_failure(
    exc: BaseException,
    *,
    job: str,
    table: TableName,
    batch: int | None,
    columns: Sequence[str],
) -> PgferryError:
    """Wrap a driver error as a :class:`LoadError` naming the table, batch and column."""
    column = getattr(exc, "column_name", None)
    text = str(exc)
    m = _ARG.search(text)
    if column is None and m and 0 < int(m.group(1)) <= len(columns):
        column = columns[int(m.group(1)) - 1]
    # The server puts "COPY t, line 5, column name" in the error's context.
    where = getattr(exc, "context", None) or getattr(exc, "where", None) or ""
    m2 = _WHERE_COLUMN.search(where)
    if column is None and m2:
        column = m2.group(1).strip('"').replace('""', '"')
    cls = TransientLoadError if is_transient(exc) else LoadError
    detail = f" ({where.splitlines()[0]})" if where else ""
    return cls(
        f"writing to {table} failed: {type(exc).__name__}: {text}{detail}",
        job=job,
        batch=batch,
        column=column,
    )


_ELEMENT = re.compile(r"element #(\d+)")


async def explain_encode_failure(
    exc: BaseException,
    conn: asyncpg.Connection,
    *,
    job: str,
    table: TableName,
    copy_into: TableName,
    batch: int,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> PgferryError:
    """Find the column and row behind a client-side encoding failure of a COPY batch.

    asyncpg raises a bare ``TypeError``/``ValueError`` when a Python value does not fit the
    column's binary encoder, without saying which column. Only on that failure, each column
    of the batch is encoded again through a prepared ``SELECT $1::type``, whose error names
    the element.
    """
    types = {
        name: type_name
        for name, type_name in await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
            copy_into.sql,
        )
    }
    for i, column in enumerate(columns):
        stmt = await conn.prepare(sql.cast_parameter(types[column]))
        try:
            await stmt.executemany([(row[i],) for row in rows])
        except (asyncpg.DataError, TypeError, ValueError, OverflowError) as probe:
            m = _ELEMENT.search(str(probe))
            where = ""
            if m and int(m.group(1)) < len(rows):
                value = rows[int(m.group(1))][i]
                where = f" (row {int(m.group(1))} of the batch, value {value!r:.80})"
            return LoadError(
                f"writing to {table} failed: column {column!r} of type {types[column]} cannot "
                f"take a value of the batch{where}: {probe.__cause__ or exc}",
                job=job,
                batch=batch,
                column=column,
            )
    return LoadError(
        f"writing to {table} failed: {type(exc).__name__}: {exc}", job=job, batch=batch
    )
