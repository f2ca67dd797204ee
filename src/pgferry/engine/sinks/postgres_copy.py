"""Binary COPY batches into a PostgreSQL table: how the columnar lane's batches land.

A batch arrives as one whole binary COPY stream (header, tuples, trailer, encoded by pgpq). It
goes straight into the table (``append``, ``replace``'s shadow) or into the upsert stage. Columns
the lane carries as text (``numeric``, ``interval``, arrays…: :mod:`pgferry.arrow`) first land
in a text staging table and reach their own types through the server's cast, which is exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from pgferry import sql
from pgferry.errors import LoadError
from pgferry.sql import TableName

if TYPE_CHECKING:
    from pgferry.engine.sinks.postgres import PostgresSink

__all__ = ["copy", "prepare"]

TEXT_STAGE = "pgferry_text_stage"


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
        status = await conn.execute(sql.insert_cast_from(target, TEXT_STAGE, cols, carried))
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
