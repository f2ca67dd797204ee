"""One run of a job: lock, run history, attempts with retries, and the result.

A run takes the advisory lock of its (job, partition) on a control connection to the target,
records itself in the runs table, then makes attempts: each attempt opens fresh source and
target connections, reads the ledger, plans where to start, and moves rows. A transient
failure (lost connection, server shutdown, deadlock…) is retried with exponential backoff and
jitter; the next attempt continues after the last committed batch. Whatever happens, the run's
row records the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import gc
import logging
import random
import threading
import time
from collections.abc import Iterator

import asyncpg

from pgferry import keys, schema
from pgferry.connection import close_quietly, connect, is_transient_pg_error
from pgferry.engine import parallel
from pgferry.engine.load import Writer
from pgferry.engine.pipe import RowLevelPipeFailure, run_pipe, sync_deletes
from pgferry.engine.pipeline import ProgressCallback, run_rows
from pgferry.engine.plan import SourcePlan, plan_source
from pgferry.errors import PgferryError, SchemaError, Transient, TransientError
from pgferry.result import RunResult
from pgferry.spec import Job
from pgferry.state import ConcurrentRunError, LedgerEntry, StateStore

__all__ = ["run_async"]

log = logging.getLogger("pgferry")


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


async def _connect(
    job: Job, role: str, codecs: bool = False, purpose: str | None = None
) -> asyncpg.Connection:
    side = job.source if role == "source" else job.target
    return await connect(
        side.dsn,
        role=role,
        job=job.name,
        timeout=job.connect_timeout,
        statement_timeout=job.statement_timeout,
        codecs=codecs,
        purpose=purpose,
    )


def _as_pgferry_error(exc: Exception, job: Job) -> PgferryError:
    """Errors that escaped the stages' own wrapping (planning, state tables)."""
    if isinstance(exc, PgferryError):
        return exc.with_context(job=job.name)
    cls = TransientError if is_transient_pg_error(exc) else PgferryError
    return cls(f"{type(exc).__name__}: {exc}", job=job.name)


_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, int, int] | None = None
# Rows are young container objects by the hundred thousand (records, tuples, dicts): with the
# default thresholds (700, 10, 10) the cyclic collector ran so often that it took a quarter
# of the row path's CPU, walking batches that reference counting frees anyway. While a run is
# active, collections happen every 100,000 allocations instead; cycles are still collected.
_GC_THRESHOLDS = (100_000, 50, 100)


@contextlib.contextmanager
def relaxed_gc() -> Iterator[None]:
    """Raise the garbage collector's thresholds while at least one run is active."""
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(*(max(a, b) for a, b in zip(_gc_saved, _GC_THRESHOLDS, strict=True)))
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
                _gc_saved = None


async def run_async(job: Job, *, on_progress: ProgressCallback | None = None) -> RunResult:
    """Run one job to completion, retrying transient failures.

    Args:
        job: The job.
        on_progress: Called with a :class:`~pgferry.engine.pipeline.Progress` after every
            committed batch.

    Returns:
        The :class:`RunResult` of a successful run.

    Raises:
        PgferryError: The run failed; ``exc.result`` holds the failed :class:`RunResult` and
            nothing already committed was lost.
    """
    with relaxed_gc():
        return await _run(job, on_progress)


async def _run(job: Job, on_progress: ProgressCallback | None) -> RunResult:
    result = RunResult(job=job.name, mode=job.target.mode, started_at=_utcnow())
    partition = job.partition.name if job.partition else ""
    result.partition = partition
    store = StateStore(job.state_schema)
    t0 = time.perf_counter()
    control: asyncpg.Connection | None = None
    attempts = 0
    recorded = False
    try:
        control = await _open_control(job, store, partition)
        ledger = await store.read(control, job.name, partition)
        if ledger is not None and ledger.watermark:
            result.watermark_before = result.watermark_after = ledger.watermark[0]
        result.run_key = job.run_key
        if await _already_committed(job, store, control, result):
            await store.start_run(control, result, partition, job.run_key, status="skipped")
            recorded = True
            return result
        await store.start_run(control, result, partition, job.run_key)
        recorded = True
        force_rows = False
        while True:
            attempts += 1
            try:
                await _attempt(job, store, result, on_progress, force_rows=force_rows)
                break
            except RowLevelPipeFailure as exc:
                if force_rows:
                    raise
                log.warning(
                    "job %s: %s; reading decoded rows instead, to name the bad row "
                    "and set it aside within max_rejects",
                    job.name,
                    exc,
                )
                force_rows = True
            except Exception as exc:
                await _pause_or_raise(job, exc, attempts, "from the last committed batch")
        result.status = "success"
        return result
    except BaseException as exc:
        result.status = "failed"
        result.error = str(exc) or type(exc).__name__
        if isinstance(exc, PgferryError):
            exc.with_context(job=job.name)
            exc.result = result  # type: ignore[attr-defined]
        raise
    finally:
        result.duration_s = time.perf_counter() - t0
        result.finished_at = _utcnow()
        result.attempts = attempts
        if recorded:
            await asyncio.shield(_record(job, store, control, result, attempts))
        await close_quietly(control)


async def _already_committed(
    job: Job, store: StateStore, control: asyncpg.Connection, result: RunResult
) -> bool:
    """Whether this is a repeat of a full append that already committed under its run key.

    Then the run does nothing and ends ``skipped``: appending the rows again would duplicate
    them. (Checked under the job's lock, so two repeats cannot both miss each other.)
    """
    if job.run_key is None or not job.repeat_duplicates:
        return False
    done = await store.find_committed(control, job.name, result.partition, job.run_key)
    if done is None:
        return False
    result.status = "skipped"
    result.committed_by = done["run_id"]
    log.warning(
        "job %s: run key %r already committed its rows in run %s (%d rows written); "
        "skipped, because appending them again would duplicate them",
        job.name,
        job.run_key,
        done["run_id"],
        done["rows_written"],
    )
    return True


def _backoff(job: Job, attempt: int) -> float:
    """Exponential backoff with jitter: retries of many tasks do not arrive together."""
    delay: float = min(60.0, job.retry_backoff * 2.0 ** (attempt - 1))
    return delay * (0.5 + random.random())


async def _pause_or_raise(job: Job, exc: Exception, attempt: int, resume: str) -> None:
    """Sleep before the next attempt if ``exc`` is transient and retries are left; else raise."""
    err = _as_pgferry_error(exc, job)
    if not isinstance(err, Transient) or attempt > job.max_retries:
        if err is exc:
            raise err
        raise err from exc
    delay = _backoff(job, attempt)
    log.warning(
        "job %s: attempt %d failed (%s); retrying in %.1f s %s", job.name, attempt, err, delay,
        resume,
    )  # fmt: skip
    await asyncio.sleep(delay)


async def _open_control(job: Job, store: StateStore, partition: str) -> asyncpg.Connection:
    """Connect to the target, set up the state tables and take the job's lock.

    Transient failures here (the target restarting, too many connections) are retried like
    those of an attempt; another run holding the lock is not: ``lock_wait`` already waited.
    """
    attempt = 0
    while True:
        attempt += 1
        conn: asyncpg.Connection | None = None
        try:
            conn = await _connect(job, "target", purpose="control")
            await store.ensure(conn)
            await store.lock(conn, job.name, partition, job.lock_wait)
            return conn
        except ConcurrentRunError:
            await close_quietly(conn)
            raise
        except Exception as exc:
            await close_quietly(conn)
            await _pause_or_raise(job, exc, attempt, "to reach the target")


async def _record(
    job: Job,
    store: StateStore,
    control: asyncpg.Connection | None,
    result: RunResult,
    attempts: int,
) -> None:
    """Write the run's outcome; on a fresh connection if the control one is gone."""
    conn = control
    fresh = None
    try:
        if conn is None or conn.is_closed():
            conn = fresh = await _connect(job, "target")
        await store.finish_run(conn, result, attempts)
    except Exception as exc:
        log.warning(
            "job %s: could not record the outcome of run %s: %s", job.name, result.run_id, exc
        )
    finally:
        await close_quietly(fresh)


async def _attempt(
    job: Job,
    store: StateStore,
    result: RunResult,
    on_progress: ProgressCallback | None,
    *,
    force_rows: bool = False,
) -> None:
    """One attempt: fresh connections, plan from the ledger, move the rows, finish."""
    row_path = job.transform is not None or force_rows
    src = tgt = None
    writer: Writer | None = None
    before = dataclasses.replace(result, stages=dict(result.stages))
    try:
        # The row path installs its codecs once it knows the columns (engine.values).
        src = await _connect(job, "source", purpose="reader")
        # The key the job names, else the source table's: every step below, parallel
        # pipelines included, sees the resolved job.
        job, choice = await keys.resolve(src, job)
        if choice.origin != "job":
            log.info("job %s: key %s: %s", job.name, list(choice.columns or ()), choice.why)
        tgt = await _connect(job, "target", purpose="loader")
        await parallel.no_pipelines(tgt, job)
        ledger = await store.read(tgt, job.name, result.partition)
        plan = await plan_source(src, job, ledger)
        plan.key = choice
        if plan.start is not None and plan.position_kind == "progress":
            log.warning(
                "job %s: an earlier run stopped part-way; continuing after %s", job.name, plan.start
            )
        writer = Writer(job, tgt, store, result, plan)
        if not await _parallel(job, src, writer, plan, ledger, row_path and not force_rows,
                               result, on_progress):  # fmt: skip
            if row_path:
                await run_rows(job, src, writer, plan, result, on_progress)
            else:
                await run_pipe(job, src, writer, plan, result, on_progress)
            if writer.ready:
                await writer.finish()
            elif job.target.mode == "replace":
                await _replace_with_nothing(job, writer)
        if job.target.sync_deletes:
            await sync_deletes(job, src, writer, plan, result)
    except BaseException:
        if writer is not None:
            await asyncio.shield(writer.abort())
            if plan.txn_scope == "run" or job.target.mode == "replace":
                # Nothing of this attempt was committed: its counters do not count.
                for name in ("rows_read", "rows_written", "rows_rejected", "batches"):
                    setattr(result, name, getattr(before, name))
        raise
    finally:
        await close_quietly(src)
        await close_quietly(tgt)


async def _parallel(
    job: Job,
    src: asyncpg.Connection,
    writer: Writer,
    plan: SourcePlan,
    ledger: LedgerEntry | None,
    transform: bool,
    result: RunResult,
    on_progress: ProgressCallback | None,
) -> bool:
    """Run the rows through parallel pipelines where the job allows and it pays; finish the
    ranges of an earlier parallel run that stopped part-way. ``False``: nothing was done."""
    ranges = parallel.parse_marker(ledger.progress if ledger is not None else None)
    if ranges is not None and plan.position_kind != "progress":
        # An upsert or replace run that failed: it starts over, its ranges are forgotten.
        await parallel.forget_ranges(writer.conn, writer.store, job, writer.partition, result,
                                     ranges)  # fmt: skip
        ranges = None
    why = parallel.why_not_parallel(job, plan) if transform else "no transform"
    if ranges is not None:
        if [ranges.column] != job.read_key:
            raise SchemaError(
                f"an earlier parallel run stopped part-way over ranges of {ranges.column!r}, "
                f"but the job's key is now {job.read_key}; run `pgferry reset` for this job",
                job=job.name,
            )
        if why is None and await parallel.run_parallel(
            job, src, writer, plan, ranges, result, on_progress
        ):
            return True
        await parallel.resume_in_process(job, writer, ranges, result, plan.estimate, on_progress)
        return True
    if why is None:
        ran: bool = await parallel.run_parallel(job, src, writer, plan, None, result, on_progress)
        return ran
    if transform and isinstance(job.pipelines, int) and job.pipelines > 1:
        log.warning("job %s: one pipeline, not %d: %s", job.name, job.pipelines, why)
    return False


async def _replace_with_nothing(job: Job, writer: Writer) -> None:
    """``replace`` with no rows at all: an existing target becomes empty, atomically."""
    existing = await schema.describe_table(writer.conn, writer.table)
    if existing is None:
        log.warning(
            "job %s: no rows and no existing target: %s was not created", job.name, writer.table
        )
        return
    await writer.prepare(existing, set())
    await writer.finish()
