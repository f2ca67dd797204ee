"""Reading what the metadata and checks report: table names, columns, counts, rejects.

Every function takes a resolved job (DSNs filled in) and opens its own short connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from pgferry import schema, sql
from pgferry.connection import close_quietly, connect
from pgferry.engine.plan import describe_source, plan_source
from pgferry.errors import SchemaError
from pgferry.schema import Column
from pgferry.spec import Job

__all__ = [
    "RejectGroup",
    "TargetInfo",
    "count_source",
    "count_target",
    "describe_target",
    "rejects_of_run",
    "source_columns",
]

T = TypeVar("T")

_QUALIFIED_NAME = """
SELECT current_database(), n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = $1::regclass
"""

_REJECTS = """
SELECT stage, error_class, "column", count(*)
FROM {s}.rejects WHERE job = $1 AND run_id = $2::uuid
GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3
"""


def _count(query: str) -> str:
    # `query` is built by pgferry.sql (quoted identifiers, bound values). pgferry.sql has no
    # counting statement yet; this wrapper adds no identifier or value of its own.
    return sql.count_rows(query)


async def _on(job: Job, role: str, use: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    side = job.source if role == "source" else job.target
    conn = await connect(
        side.dsn,
        role=role,
        job=job.name,
        timeout=job.connect_timeout,
        statement_timeout=job.statement_timeout,
    )
    try:
        return await use(conn)
    finally:
        await close_quietly(conn)


@dataclass(frozen=True)
class TargetInfo:
    """The target table after a run.

    Attributes:
        table_name: ``database.schema.table``.
        columns: Its columns with exact types.
        row_count: Rows in the whole table, if counted.
        partition_row_count: Rows in the job's partition, if it has one and they were counted.
    """

    table_name: str
    columns: list[Column]
    row_count: int | None
    partition_row_count: int | None = None


async def _count_table(conn: asyncpg.Connection, job: Job, columns: list[Column]) -> int:
    query = sql.select_from_table(job.target.pg_table, [columns[0].name])
    return int(await conn.fetchval(_count(query)))


async def _count_partition(conn: asyncpg.Connection, job: Job, columns: list[Column]) -> int:
    table = job.target.pg_table
    types = {c.name: c.type for c in columns}
    part = job.partition
    assert part is not None
    if part.column not in types:
        raise SchemaError(
            f"target table {table} has no column {part.column!r} to count the partition by",
            job=job.name,
            column=part.column,
        )
    args = [str(v) for v in (part.lower, part.upper) if v is not None]
    lower = 1 if part.lower is not None else None
    upper = (2 if lower else 1) if part.upper is not None else None
    where = [sql.range_filter(part.column, types[part.column], lower, upper)]
    base = sql.select_from_table(table, [part.column])
    query = sql.ordered_source(base, [part.column], where=where, order_by=())
    return int(await conn.fetchval(_count(query), *args))


async def describe_target(
    job: Job, *, count: bool, count_partition: bool = False
) -> TargetInfo | None:
    """Name and columns of the job's target, ``None`` if absent; with ``count`` the rows of the
    whole table, with ``count_partition`` (and a partition) the rows of the job's partition."""

    async def use(conn: asyncpg.Connection) -> TargetInfo | None:
        columns = await schema.describe_table(conn, job.target.pg_table)
        if columns is None:
            return None
        name = await conn.fetchrow(_QUALIFIED_NAME, job.target.pg_table.sql)
        assert name is not None  # `$1::regclass` raises for a missing table: a row comes back
        db, nsp, rel = name
        rows = await _count_table(conn, job, columns) if count and columns else None
        in_partition = (
            await _count_partition(conn, job, columns)
            if count_partition and columns and job.partition is not None
            else None
        )
        return TargetInfo(f"{db}.{nsp}.{rel}", columns, rows, in_partition)

    return await _on(job, "target", use)


async def count_target(job: Job) -> int | None:
    """Rows of the target in the job's scope (its partition, else all); ``None`` if absent."""
    if job.partition is None:
        info = await describe_target(job, count=True)
        return info.row_count if info is not None else None
    info = await describe_target(job, count=False, count_partition=True)
    return info.partition_row_count if info is not None else None


async def source_columns(job: Job) -> list[Column]:
    """The source's columns with exact types."""

    async def use(conn: asyncpg.Connection) -> list[Column]:
        return (await describe_source(conn, job))[1]

    return await _on(job, "source", use)


async def count_source(job: Job) -> int:
    """Rows of the source in the job's scope: its partition, from ``incremental.initial``."""

    async def use(conn: asyncpg.Connection) -> int:
        plan = await plan_source(conn, job, None)
        return int(await conn.fetchval(_count(plan.unordered), *plan.args))

    return await _on(job, "source", use)


@dataclass(frozen=True)
class RejectGroup:
    """Rejected rows of one run with the same stage, error class and column."""

    stage: str
    error_class: str
    column: str | None
    rows: int


async def rejects_of_run(job: Job, run_id: str) -> list[RejectGroup]:
    """The rows a run set aside in the rejects table, grouped (no row data)."""

    async def use(conn: asyncpg.Connection) -> list[RejectGroup]:
        table = sql.in_schema("{s}.rejects", job.state_schema)
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            return []
        rows: list[Any] = await conn.fetch(
            sql.in_schema(_REJECTS, job.state_schema), job.name, run_id
        )
        return [RejectGroup(r[0], r[1], r[2], int(r[3])) for r in rows]

    return await _on(job, "target", use)
