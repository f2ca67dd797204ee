"""One run of a job: lock, run history, attempts under the retry policy, and the result.

A run takes the advisory lock of its (job, partition) on a control connection to the target,
records itself in the runs table, then makes attempts (:mod:`pgferry.engine.attempt`): each
opens fresh connections, reads the ledger, plans where to start, and moves rows. A transient
failure (lost connection, server shutdown, deadlock…) is retried under the job's
:class:`~pgferry.retry.RetryPolicy`; the next attempt continues after the last committed batch.
Whatever happens, the run's row records the outcome.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg

from pgferry.connection import close_quietly
from pgferry.engine.attempt import Lane, attempt, lane_of, open_control
from pgferry.engine.connect import connect_side
from pgferry.engine.host import relaxed_gc
from pgferry.engine.progress import ProgressCallback
from pgferry.errors import ConcurrentRunError, PgferryError, RowLevelPipeFailure
from pgferry.result import RunResult
from pgferry.retry import RetryPolicy, as_pgferry_error, is_transient
from pgferry.spec import Job
from pgferry.state import StateStore

__all__ = ["run_async"]

log = logging.getLogger("pgferry")

T = TypeVar("T")


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


async def run_async(job: Job, *, on_progress: ProgressCallback | None = None) -> RunResult:
    """Run one job to completion, retrying transient failures.

    Args:
        job: The job.
        on_progress: Called with a :class:`~pgferry.engine.progress.Progress` after every
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
    policy = RetryPolicy.of(job)
    lane = lane_of(job)

    async def one_attempt() -> None:
        nonlocal attempts, lane
        attempts += 1
        try:
            await attempt(job, store, result, on_progress, lane=lane)
        except RowLevelPipeFailure as exc:
            if lane is not Lane.PIPE:
                raise
            log.warning(
                "job %s: %s; reading decoded rows instead, to name the bad row "
                "and set it aside within max_rejects",
                job.name,
                exc,
            )
            lane = Lane.ROWS_TO_ISOLATE
            attempts += 1
            await attempt(job, store, result, on_progress, lane=lane)

    try:
        control = await _raise_classified(
            policy.call(
                lambda: open_control(job, store, partition),
                what="reaching the target",
                job=job.name,
                retry_on=_retry_reaching,
            ),
            job,
        )
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
        await _raise_classified(
            policy.call(
                one_attempt,
                what="run attempt (the next continues after the last committed batch)",
                job=job.name,
            ),
            job,
        )
        result.status = "success"
        return result
    except BaseException as exc:
        result.status = "failed"
        result.error = str(exc) or type(exc).__name__
        if isinstance(exc, PgferryError):
            exc.with_context(job=job.name)
            exc.result = result
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
            conn = fresh = await connect_side(job, "target")
        await store.finish_run(conn, result, attempts)
    except Exception as exc:
        log.warning(
            "job %s: could not record the outcome of run %s: %s", job.name, result.run_id, exc
        )
    finally:
        await close_quietly(fresh)


def _retry_reaching(exc: BaseException) -> bool:
    # Another run holding the lock is not retried: ``lock_wait`` already waited for it.
    return is_transient(exc) and not isinstance(exc, ConcurrentRunError)


async def _raise_classified(awaitable: Awaitable[T], job: Job) -> T:
    """Await; an error that escaped the stages' own wrapping becomes a :class:`PgferryError`
    (transient where a retry could help), raised from the original."""
    try:
        return await awaitable
    except Exception as exc:
        err = as_pgferry_error(exc, job.name)
        if err is exc:
            raise
        raise err from exc
