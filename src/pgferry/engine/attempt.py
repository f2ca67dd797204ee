"""One attempt of a run: fresh connections, a plan from the ledger, a lane, the finish.

An attempt that fails part-way leaves every committed batch committed; the run loop
(:mod:`pgferry.engine.run`) decides whether to make another, which continues after the last
committed batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from enum import Enum

import asyncpg

from pgferry import keys, locks, schema
from pgferry.arrow import columnar_kind
from pgferry.connection import close_quietly
from pgferry.engine import parallel
from pgferry.engine.connect import connect_side
from pgferry.engine.http_attempt import attempt_http
from pgferry.engine.lanes.base import LaneContext
from pgferry.engine.lanes.pipe import run_pipe, sync_deletes
from pgferry.engine.lanes.rows import run_rows
from pgferry.engine.plan import plan_source
from pgferry.engine.progress import ProgressCallback
from pgferry.engine.sinks.postgres import PostgresSink
from pgferry.errors import ConfigError, SchemaError
from pgferry.result import RunResult
from pgferry.spec import Job
from pgferry.state import LedgerEntry, StateStore

__all__ = ["Lane", "attempt"]

log = logging.getLogger("pgferry")


class Lane(Enum):
    """How an attempt moves rows."""

    PIPE = "pipe"
    """Binary COPY bytes, no row decoded (no transform)."""
    ROWS = "rows"
    """Decoded rows through the transform."""
    ROWS_TO_ISOLATE = "rows to isolate"
    """Decoded rows without a transform: the pipe met a refused row, which this lane names."""
    COLUMNAR = "columnar"
    """Arrow batches through an Arrow or Polars transform (:mod:`pgferry.arrow`)."""


def lane_of(job: Job) -> Lane:
    """The lane a job's first attempt takes: the transform's presence and kind choose."""
    if job.transform is None:
        return Lane.PIPE
    return Lane.COLUMNAR if columnar_kind(job.transform) is not None else Lane.ROWS


async def attempt(
    job: Job,
    store: StateStore,
    result: RunResult,
    on_progress: ProgressCallback | None,
    *,
    lane: Lane,
) -> None:
    """One attempt: fresh connections, plan from the ledger, move the rows, finish."""
    if job.target.http is not None:
        if lane is Lane.COLUMNAR:
            raise ConfigError(
                "an Arrow or Polars transform writes binary COPY into PostgreSQL; an HTTP "
                "target takes a row or batch transform",
                job=job.name,
            )
        await attempt_http(job, store, result, on_progress)
        return
    src = tgt = None
    sink: PostgresSink | None = None
    before = dataclasses.replace(result, stages=dict(result.stages))
    try:
        # The row lane installs its codecs once it knows the columns (engine.values).
        src = await connect_side(job, "source", purpose="reader")
        # The key the job names, else the source table's (pgferry.keys): every step below,
        # parallel pipelines included, sees the resolved job.
        job, choice = await keys.resolve(src, job)
        if choice.origin != "job":
            log.info("job %s: key %s: %s", job.name, list(choice.columns or ()), choice.why)
        tgt = await connect_side(job, "target", purpose="loader")
        partition = job.partition.name if job.partition else ""
        await locks.wait_for_no_pipelines(tgt, job.name, partition, job.lock_wait)
        ledger = await store.read(tgt, job.name, result.partition)
        plan = await plan_source(src, job, ledger)
        plan.key = choice
        if plan.start is not None and plan.position_kind == "progress":
            log.warning(
                "job %s: an earlier run stopped part-way; continuing after %s", job.name, plan.start
            )
        sink = PostgresSink(job, tgt, store, result, plan)
        ctx = LaneContext(job, src, sink, plan, result, on_progress)
        if not await _parallel(ctx, ledger, lane=lane):
            if lane is Lane.PIPE:
                await run_pipe(ctx)
            elif lane is Lane.COLUMNAR:
                await _columnar_lane()(ctx)
            else:
                await run_rows(ctx)
            if sink.ready:
                await sink.finish()
            elif job.target.mode == "replace":
                await _replace_with_nothing(job, sink)
        if job.target.sync_deletes:
            await sync_deletes(job, src, sink, plan, result)
    except BaseException:
        if sink is not None:
            await asyncio.shield(sink.abort())
            if sink.plan.txn_scope == "run" or job.target.mode == "replace":
                # Nothing of this attempt was committed: its counters do not count.
                for name in ("rows_read", "rows_written", "rows_rejected", "batches"):
                    setattr(result, name, getattr(before, name))
        raise
    finally:
        await close_quietly(src)
        await close_quietly(tgt)


async def _parallel(ctx: LaneContext, ledger: LedgerEntry | None, *, lane: Lane) -> bool:
    """Run the rows through parallel pipelines where the job allows and it pays; finish the
    ranges of an earlier parallel run that stopped part-way. ``False``: nothing was done."""
    job, plan, result = ctx.job, ctx.plan, ctx.result
    sink = ctx.sink
    assert isinstance(sink, PostgresSink)
    ranges = parallel.parse_marker(ledger.progress if ledger is not None else None)
    if ranges is not None and plan.position_kind != "progress":
        # An upsert or replace run that failed: it starts over, its ranges are forgotten.
        await parallel.forget_ranges(sink.conn, sink.store, job, sink.partition, result, ranges)
        ranges = None
    why = (
        parallel.why_not_parallel(job, plan)
        if lane is Lane.ROWS
        else "the columnar lane runs one pipeline"
        if lane is Lane.COLUMNAR
        else "no transform"
    )
    if ranges is not None:
        if [ranges.column] != job.read_key:
            raise SchemaError(
                f"an earlier parallel run stopped part-way over ranges of {ranges.column!r}, "
                f"but the job's key is now {job.read_key}; run `pgferry reset` for this job",
                job=job.name,
            )
        if why is None and await parallel.run_parallel(ctx, ranges):
            return True
        await parallel.resume_in_process(job, sink, ranges, result, plan.estimate, ctx.on_progress)
        return True
    if why is None:
        ran: bool = await parallel.run_parallel(ctx, None)
        return ran
    if lane is not Lane.PIPE and isinstance(job.pipelines, int) and job.pipelines > 1:
        log.warning("job %s: one pipeline, not %d: %s", job.name, job.pipelines, why)
    return False


def _columnar_lane() -> Callable[[LaneContext], Awaitable[None]]:
    """The columnar lane, imported when a run takes it: it needs ``pgferry[arrow]``."""
    from pgferry.engine.lanes.columnar import run_columnar

    return run_columnar


async def _replace_with_nothing(job: Job, sink: PostgresSink) -> None:
    """``replace`` with no rows at all: an existing target becomes empty, atomically."""
    existing = await schema.describe_table(sink.conn, sink.table)
    if existing is None:
        log.warning(
            "job %s: no rows and no existing target: %s was not created", job.name, sink.table
        )
        return
    await sink.prepare(existing, set())
    await sink.finish()


async def open_control(job: Job, store: StateStore, partition: str) -> asyncpg.Connection:
    """Connect to the target, set up the state tables and take the run's lock.

    Raises:
        ConcurrentRunError: Another run held the lock for longer than ``lock_wait``.
    """
    conn: asyncpg.Connection | None = None
    try:
        conn = await connect_side(job, "target", purpose="control")
        await store.ensure(conn)
        await locks.take_run_lock(conn, job.name, partition, job.lock_wait)
        return conn
    except BaseException:
        await close_quietly(conn)
        raise
