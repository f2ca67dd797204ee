"""Parallel pipelines: several complete reader → transform → loader pipelines over key ranges.

A process pool pays for pickling every batch twice while the main process still decodes and
encodes every row. Here no row crosses a process boundary: the coordinator exports a snapshot
from a ``REPEATABLE READ READ ONLY`` source transaction, splits the integer key into N ranges,
prepares the target (or the ``replace`` shadow), and runs each range through
:func:`pgferry.engine.worker.run_range` (one in its own process, the others in worker
processes), each reading inside the shared snapshot and committing every batch with the range's
own ledger row. The coordinator keeps its transaction open until every pipeline has imported the
snapshot, adds up the counters into the run's :class:`~pgferry.result.RunResult`, and finishes
(clears the progress, swaps the shadow in).

Exactly once, mode by mode (``docs/guarantees.md``):

* ``append`` with a key: before any pipeline starts, the job's ledger row records the plan
  (``progress = [MARKER, plan id, key column, bounds…]``, committed); each range resumes after
  its own committed progress. Any later run of the job, parallel or not, finds the plan and
  finishes its ranges (:func:`resume_in_process` when it cannot start processes). The end of the
  run removes the ranges' rows and the plan in one transaction.
* ``upsert`` (key = the read key, so that a key lives in one range) is idempotent: a later run
  starts over; ``replace`` loads the shadow, which a failed run drops.
* A pipeline left behind by a coordinator that died (SIGKILL) dies with it; until its backends are
  gone it holds :func:`~pgferry.engine.ranges.pipelines_lock` in shared mode, and every run of
  the job waits for that lock (:func:`~pgferry.engine.ranges.no_pipelines`) before it reads the
  ledger.

Everything else runs in one pipeline: incremental loads (one watermark in key order), an append
without a key (one transaction), partitions, ``sync_deletes``, ``max_rejects`` (one budget), keys
that are not a single integer column, transforms that cannot be imported by path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from pgferry import schema, sql
from pgferry.engine import functions as tf
from pgferry.engine import values
from pgferry.engine.host import cores
from pgferry.engine.items import record_rows
from pgferry.engine.lanes.base import LaneContext
from pgferry.engine.plan import SourcePlan
from pgferry.engine.progress import Progress, ProgressCallback
from pgferry.engine.ranges import (
    MARKER,
    Ranges,
    forget_ranges,
    parse_marker,
    pipelines_lock,
    transform_path,
    why_not_parallel,
)
from pgferry.engine.sinks.postgres import PostgresSink
from pgferry.engine.stages import run_stages
from pgferry.engine.worker import RangeTask, run_in_subprocess, run_range
from pgferry.errors import SchemaError
from pgferry.result import RunResult
from pgferry.retry import as_pgferry_error
from pgferry.spec import Job, Partition

__all__ = [
    "MARKER",
    "Ranges",
    "forget_ranges",
    "parse_marker",
    "pipelines_lock",
    "resume_in_process",
    "run_parallel",
    "why_not_parallel",
]

log = logging.getLogger("pgferry")

# ``pipelines: auto`` starts processes only for work that pays for them. A worker process
# takes about 0.3 s of CPU to start (interpreter, asyncpg, pydantic) and two connections, and
# on two cores shared with the server two pipelines are at best ~1.45x as fast as one: below
# about 3 s of client work (≈ 300k-600k rows of the standard workload) one pipeline wins
# (measured: 200k rows 1.67 s in one pipeline, 1.79 s in two; 1M rows 8.9 s vs 6.1 s).
_AUTO_MIN_ROWS = 200_000
_AUTO_MIN_SECONDS = 3.0
_AUTO_MAX = 8
_MIN_SHARED_BATCH = 1_000


def _share(job: Job, n: int) -> dict[str, int]:
    """Batch size and queue depth of one of ``n`` pipelines.

    Rows in flight (and so memory) stay what ``batch_size`` and ``queue_depth`` say for the
    whole run, whatever ``n``: each pipeline gets its share (batches of at least 1,000 rows,
    queues at least one deep). The pipelines keep each other's CPUs busy, so short queues
    cost them little.
    """
    return {
        "batch_size": max(min(job.batch_size, _MIN_SHARED_BATCH), job.batch_size // n),
        "queue_depth": max(1, job.queue_depth // n),
    }


def _range_job(job: Job, partition: Partition, n: int) -> Job:
    """The job of one range: its own ledger row, the transform inline, its share of memory."""
    return job.model_copy(
        update={"partition": partition, "workers": 0, "pipelines": 1, **_share(job, n)}
    )


def _range_task(
    job: Job,
    partition: Partition,
    n: int,
    snapshot: str | None,
    columns: Sequence[str],
    run_id: str,
) -> RangeTask:
    data = job.model_dump(mode="json", exclude={"transform"})
    data.update(
        transform=transform_path(job),
        partition=partition.model_dump(mode="json"),
        workers=0,
        pipelines=1,
        **_share(job, n),
    )
    return RangeTask(
        job=data,
        snapshot=snapshot or "",
        columns=list(columns),
        run_id=run_id,
        lock=pipelines_lock(job),
        sys_path=list(sys.path),
        parent=os.getpid(),
        log_level=log.getEffectiveLevel(),
    )


class _Tally:
    """Adds the pipelines' counters into the run's result as their batches commit."""

    def __init__(
        self, result: RunResult, n: int, estimate: int | None, on_progress: ProgressCallback | None
    ) -> None:
        self.result = result
        self.seen = [
            dict.fromkeys(("rows_read", "rows_written", "rows_rejected", "batches"), 0)
            for _ in range(n)
        ]
        self.ready = [False] * n
        self.all_ready = asyncio.Event()
        self.estimate = estimate
        self.on_progress = on_progress
        self.n = n

    def __call__(self, i: int, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "ready":
            self.ready[i] = True
            if all(self.ready):
                self.all_ready.set()
        elif kind == "batch":
            for name, before in self.seen[i].items():
                now = int(event[name])
                setattr(self.result, name, getattr(self.result, name) + now - before)
                self.seen[i][name] = now
            if self.on_progress is not None:
                r = self.result
                self.on_progress(Progress(r.rows_read, r.rows_written, 0, self.estimate, "rows"))
        elif kind == "log":
            log.log(int(event["level"]), "%s [pipeline %d of %d]", event["message"], i + 1, self.n)
        elif kind == "done":
            for stage, (busy, wait) in event["stages"].items():
                self.result.stages[stage].busy_s += busy
                self.result.stages[stage].wait_s += wait


async def _in_worker(task: RangeTask, i: int, tally: _Tally) -> None:
    await run_in_subprocess(task, lambda event: tally(i, event), f"pipeline {i + 1} of {tally.n}")


async def _in_process(job: Job, task: RangeTask, i: int, tally: _Tally) -> None:
    try:
        await run_range(job, task, lambda event: tally(i, event))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise as_pgferry_error(exc, job.name) from exc


async def run_parallel(ctx: LaneContext, ranges: Ranges | None) -> bool:
    """Run the job's rows through parallel pipelines if that is worthwhile.

    Args:
        ctx: The single pipeline's inputs (its reader exports the shared snapshot).
        ranges: The plan of an earlier run that stopped part-way, to finish; else ``None``.

    Returns:
        ``False`` if the caller should run a single pipeline instead (nothing was written).
    """
    job, src, plan, result = ctx.job, ctx.src, ctx.plan, ctx.result
    writer = ctx.sink
    assert isinstance(writer, PostgresSink)
    auto = job.pipelines == "auto" and ranges is None
    if auto:
        why = _too_small(plan.estimate)
        if why:
            log.info("job %s: one pipeline (%s)", job.name, why)
            return False
    await values.prepare_source(src)
    tx = _SnapshotTransaction(src)
    await tx.start()
    try:
        snapshot = await src.fetchval("SELECT pg_export_snapshot()")
        rows = plan.estimate
        if ranges is None:
            ranges, span = await _plan_ranges(job, src, plan)
            if ranges is None:
                return False
            rows = rows if rows is not None else span  # a query: its key span stands in
        probe = await _probe(job, src, plan)
        if probe is None:
            if not ranges.resumed:
                return False
            await tx.end()
            await _finish(job, writer, ranges)  # nothing left to read
            return True
        out_cols, out_rows, seconds_per_row = probe
        if auto:
            # Loading costs the client about as much as reading and transforming did.
            work = 2 * seconds_per_row * (rows or 0)
            if work < _AUTO_MIN_SECONDS:
                log.info(
                    "job %s: one pipeline (about %.1f s of client work at %.1f µs/row is too "
                    "little to pay for starting processes)",
                    job.name,
                    work,
                    seconds_per_row * 1e6,
                )
                return False
        incoming = schema.output_columns(out_cols, out_rows, plan.columns, job.target.columns)
        typed = {c.name for c in plan.columns} | set(job.target.columns)
        await writer.prepare(incoming, typed & set(out_cols))
        del probe, out_rows, incoming  # a batch's worth of memory, needed no more
        if not ranges.resumed:
            await writer.store.save_batch(
                writer.conn,
                job.name,
                writer.partition,
                watermark=None,
                progress=ranges.marker(),
                run_id=result.run_id,
                rows=0,
            )
        log.info(
            "job %s: %d pipelines over ranges of %s%s (transform %.1f µs/row incl. decoding, "
            "%d cores)",
            job.name,
            ranges.count,
            ranges.column,
            ", continuing an earlier run" if ranges.resumed else "",
            seconds_per_row * 1e6,
            cores(),
        )
        result.workers = ranges.count
        await _run_ranges(job, writer, ranges, snapshot, tx, result, plan.estimate, ctx.on_progress)
    finally:
        await tx.end(commit=False)
    await _finish(job, writer, ranges)
    return True


class _SnapshotTransaction:
    """The coordinator's source transaction, whose snapshot the pipelines import."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.tx = conn.transaction(isolation="repeatable_read", readonly=True)
        self.open = False

    async def start(self) -> None:
        await self.tx.start()
        self.open = True

    async def end(self, *, commit: bool = True) -> None:
        """Commit (release the snapshot) or roll back, once."""
        if not self.open:
            return
        self.open = False
        if self.conn.is_closed():
            return
        await (self.tx.commit() if commit else self.tx.rollback())


def _too_small(estimate: int | None) -> str | None:
    if cores() < 2:
        return "one core"
    if estimate is not None and estimate < _AUTO_MIN_ROWS:
        return f"about {estimate:,} rows: too few to pay for starting processes"
    return None


async def _plan_ranges(
    job: Job, src: asyncpg.Connection, plan: SourcePlan
) -> tuple[Ranges | None, int]:
    """Split the key evenly between its minimum and maximum in the snapshot.

    Returns:
        The ranges (``None``: fewer than two) and the key's span.
    """
    (key,) = job.read_key or []
    span_row = await src.fetchrow(sql.min_max(plan.base, key), *plan.base_args)
    assert span_row is not None  # an aggregate: one row, always
    low, high = span_row
    if low is None:
        return None, 0
    span = high - low + 1
    n = job.pipelines if isinstance(job.pipelines, int) else min(cores(), _AUTO_MAX)
    if job.pipelines == "auto":
        # At least _AUTO_MIN_ROWS / 2 rows per pipeline.
        rows = plan.estimate if plan.estimate is not None else span
        n = max(1, min(n, rows // (_AUTO_MIN_ROWS // 2)))
    step = span / n
    bounds = sorted({int(low + step * i) for i in range(1, n)} - {low})
    if not bounds:
        return None, span
    return Ranges(uuid.uuid4().hex[:8], key, bounds), span


async def _probe(
    job: Job, src: asyncpg.Connection, plan: SourcePlan
) -> tuple[tuple[str, ...], list[tuple[Any, ...]], float] | None:
    """Read and transform the first batch: the output columns (to prepare the target) and
    the client's cost per row of decoding plus transforming."""
    start = time.perf_counter()
    cursor = await src.cursor(plan.query, *plan.args)
    rows = await cursor.fetch(job.batch_size)
    if not rows:
        return None
    fn = tf.load_transform(job.transform) if job.transform is not None else None
    assert fn is not None
    columns = tuple(c.name for c in plan.columns)
    out_cols, out_rows = tf.apply_transform(
        fn, tf.is_batch_transform(fn), columns, record_rows(rows), job.read_key
    )
    seconds = (time.perf_counter() - start) / len(rows)
    if out_cols is None:
        raise SchemaError(
            "the transform dropped every row of the first batch, so the target's columns are "
            "unknown; set pipelines: 1",
            job=job.name,
        )
    return out_cols, out_rows, seconds


async def _run_ranges(
    job: Job,
    writer: PostgresSink,
    ranges: Ranges,
    snapshot: str,
    tx: _SnapshotTransaction,
    result: RunResult,
    estimate: int | None,
    on_progress: ProgressCallback | None,
) -> None:
    partition = writer.partition
    parts = ranges.partitions(partition)
    tally = _Tally(result, ranges.count, estimate, on_progress)
    n = ranges.count
    tasks = [_range_task(job, p, n, snapshot, writer.columns, result.run_id) for p in parts]

    async def release_snapshot() -> None:
        # The exported snapshot lives as long as the transaction that exported it.
        await tally.all_ready.wait()
        await tx.end()

    stages = [
        _in_process(_range_job(job, parts[0], n), tasks[0], 0, tally),
        *(_in_worker(task, i, tally) for i, task in enumerate(tasks[1:], 1)),
        release_snapshot(),
    ]
    await run_stages(*stages)


async def _finish(job: Job, writer: PostgresSink, ranges: Ranges) -> None:
    """Forget the ranges (their ledger rows and the plan); finish the target."""
    await forget_ranges(
        writer.conn, writer.store, job, writer.partition, writer.result, ranges, done=True
    )
    if writer.ready:
        await writer.finish()


async def resume_in_process(
    job: Job,
    writer: PostgresSink,
    ranges: Ranges,
    result: RunResult,
    estimate: int | None,
    on_progress: ProgressCallback | None,
) -> None:
    """Finish the ranges of a stopped parallel run here, one after another.

    For a job that cannot start pipelines now (its transform is a lambda, ``pipelines: 1``…):
    each range still continues after its own committed progress, in a snapshot of its own.
    """
    log.warning(
        "job %s: an earlier parallel run stopped part-way; finishing its %d ranges in this process",
        job.name,
        ranges.count,
    )
    tally = _Tally(result, ranges.count, estimate, on_progress)
    for i, part in enumerate(ranges.partitions(writer.partition)):
        range_job = _range_job(job, part, 1)
        # No shared snapshot and no prepared target: each range plans and prepares its own.
        task = _range_task(range_job, part, 1, None, [], result.run_id)
        await _in_process(range_job, task, i, tally)
    await _finish(job, writer, ranges)
