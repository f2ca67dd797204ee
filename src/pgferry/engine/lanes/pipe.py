"""The ``pipe`` path: a job without a transform, streamed as binary COPY, no row decoded.

``COPY (…) TO STDOUT (FORMAT binary)`` on the source feeds ``COPY … FROM STDIN (FORMAT
binary)`` on the target through a bounded queue of raw chunks; the whole stream and its ledger
entry are one transaction. The same stream carries a full upsert's source keys for
:func:`sync_deletes`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Callable, Coroutine, Sequence
from typing import Any

import asyncpg

from pgferry import sql
from pgferry.engine.extract import extract_failure
from pgferry.engine.lanes.base import LaneContext
from pgferry.engine.plan import SourcePlan
from pgferry.engine.progress import Progress, ProgressCallback
from pgferry.engine.sinks.postgres import STAGE, PostgresSink
from pgferry.engine.sinks.postgres_errors import load_failure
from pgferry.engine.stages import END, run_stages
from pgferry.errors import RowLevelPipeFailure
from pgferry.result import RunResult
from pgferry.spec import Job

__all__ = ["pipe", "run_pipe", "sync_deletes"]

log = logging.getLogger("pgferry")

_WRITE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


async def pipe(
    src: asyncpg.Connection,
    query: str,
    args: Sequence[Any],
    *,
    depth: int,
    job: Job,
    write: Callable[[Any], Coroutine[Any, Any, Any]],
    after_read: Callable[[], Coroutine[Any, Any, None]] | None = None,
    result: RunResult | None = None,
    on_progress: ProgressCallback | None = None,
) -> Any:
    """Stream ``COPY (query) TO STDOUT (FORMAT binary)`` into ``write(chunks)``.

    ``after_read`` runs on the source inside the same snapshot once the data is out (to read
    the last position). Returns what ``write`` returns.
    """
    chunks: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(8, depth * 4))
    stats = result.stages if result is not None else None
    moved = 0
    written: Any = None

    async def sink(data: bytes) -> None:
        nonlocal moved
        moved += len(data)
        start = time.perf_counter()
        await chunks.put(data)
        if stats is not None:
            stats["extract"].wait_s += time.perf_counter() - start
        if on_progress is not None:
            on_progress(Progress(0, 0, moved, None, "pipe"))

    async def producer() -> None:
        start = time.perf_counter()
        try:
            async with src.transaction(isolation="repeatable_read", readonly=True):
                await src.copy_from_query(query, *args, output=sink, format="binary")
                if after_read is not None:
                    await after_read()
        except (*_WRITE_ERRORS, ValueError) as exc:
            raise extract_failure(exc, job=job.name, batch=0) from exc
        await chunks.put(END)
        if stats is not None:
            stats["extract"].busy_s += time.perf_counter() - start - stats["extract"].wait_s

    async def source() -> Any:
        while True:
            start = time.perf_counter()
            chunk = await chunks.get()
            if stats is not None:
                stats["load"].wait_s += time.perf_counter() - start
            if chunk is END:
                return
            yield chunk

    async def consumer() -> None:
        nonlocal written
        start = time.perf_counter()
        written = await write(source())
        if stats is not None:
            stats["load"].busy_s += time.perf_counter() - start - stats["load"].wait_s

    await run_stages(producer(), consumer())
    return written


async def run_pipe(ctx: LaneContext) -> None:
    """The binary pipe: one COPY stream, committed with its ledger entry in one transaction."""
    job, src, plan, result = ctx.job, ctx.src, ctx.plan, ctx.result
    writer = ctx.sink
    if not isinstance(writer, PostgresSink):
        raise TypeError(f"the binary pipe writes to PostgreSQL only, not {type(writer).__name__}")
    result.path = "pipe"
    await writer.prepare(plan.columns, {c.name for c in plan.columns})
    select = sql.select_with_casts(
        plan.unordered, [(c, writer.casts.get(c)) for c in writer.columns]
    )
    position: list[str] | None = None

    async def read_position() -> None:
        nonlocal position
        if plan.position_columns:
            row = await src.fetchrow(
                sql.last_position(plan.unordered, plan.position_columns), *plan.args
            )
            position = list(row) if row is not None else None

    async def write(chunks: Any) -> tuple[int, int]:
        tgt = writer.conn
        try:
            async with tgt.transaction():
                copied, rows = await _write_stream(writer, chunks)
                await writer.store.save_batch(
                    tgt,
                    job.name,
                    writer.partition,
                    watermark=position if plan.position_kind == "watermark" else None,
                    progress=position if plan.position_kind == "progress" else None,
                    run_id=result.run_id,
                    rows=rows,
                )
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            raise RowLevelPipeFailure(
                f"the target refused a row of the binary stream: {exc}", job=job.name
            ) from exc
        except _WRITE_ERRORS as exc:
            raise load_failure(
                exc, job=job.name, table=writer.table, batch=0, columns=writer.columns
            ) from exc
        return copied, rows

    copied, rows = await pipe(
        src,
        select,
        plan.args,
        depth=job.queue_depth,
        job=job,
        write=write,
        after_read=read_position,
        result=result,
        on_progress=ctx.on_progress,
    )
    result.rows_read += copied
    result.rows_written += rows
    result.batches += 1
    if position is not None and plan.position_kind == "watermark":
        result.watermark_after = position[0]


async def sync_deletes(
    job: Job, src: asyncpg.Connection, writer: PostgresSink, plan: SourcePlan, result: RunResult
) -> None:
    """Delete target rows whose key is gone from the source (full upsert runs)."""
    key = job.upsert_key or []
    keys_table = "pgferry_source_keys"
    select = sql.select_with_casts(
        sql.ordered_source(plan.base, key, where=(), order_by=()),
        [(k, writer.types[k]) for k in key],
    )
    tgt = writer.conn

    async def write(chunks: Any) -> int:
        await tgt.execute(sql.create_keys_table(keys_table, [(k, writer.types[k]) for k in key]))
        status = await tgt.copy_to_table(keys_table, source=chunks, format="binary")
        return int(str(status).split()[-1])

    async with tgt.transaction():
        await tgt.execute(f"DROP TABLE IF EXISTS pg_temp.{sql.quote_ident(keys_table)}")
        seen = await pipe(src, select, plan.base_args, depth=job.queue_depth, job=job, write=write)
        status = await tgt.execute(sql.delete_missing_keys(writer.table, keys_table, key))
        await tgt.execute(f"DROP TABLE pg_temp.{sql.quote_ident(keys_table)}")
    result.rows_deleted = int(status.split()[-1])
    log.info(
        "job %s: %d source keys, deleted %d target rows whose key is gone",
        job.name,
        seen,
        result.rows_deleted,
    )


async def _write_stream(sink: PostgresSink, chunks: AsyncIterable[bytes]) -> tuple[int, int]:
    """``COPY … FROM STDIN (FORMAT binary)`` from raw chunks (upsert: via the sink's stage).

    Runs inside the caller's transaction; returns the rows copied and the rows written (an
    upsert writes only new and changed rows).
    """
    conn, columns = sink.conn, list(sink.columns)
    if not sink.upsert:
        status = await conn.copy_to_table(
            sink.copy_into.name,
            schema_name=sink.copy_into.schema,
            columns=columns,
            source=chunks,
            format="binary",
        )
        copied = int(str(status).split()[-1])
        return copied, copied
    status = await conn.copy_to_table(STAGE, columns=columns, source=chunks, format="binary")
    merged = await conn.execute(
        sql.merge_stage(sink.copy_into, STAGE, sink.columns, sink.job.upsert_key or [])
    )
    await conn.execute(sql.truncate(STAGE))
    return int(str(status).split()[-1]), int(merged.split()[-1])
