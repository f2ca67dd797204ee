"""Advisory locks: every lock pgferry takes on the target (or state) database, in one place.

* The **run lock** of a (job, partition), held by a run's control connection for the whole run:
  two runs of the same job and partition never overlap.
* The **pipelines lock** of a job, held in shared mode by every pipeline process of a parallel
  run for the life of its connection. A run takes it exclusively (and lets go at once) before
  it reads the ledger, so a pipeline that outlived its coordinator (SIGKILL) has stopped
  writing before anyone plans from the ledger.

A lock that another session holds is waited for up to a limit with the server's own
``lock_timeout``, so the wait is one statement that the server ends, not a polling loop.
"""

from __future__ import annotations

import logging

import asyncpg

from pgferry.errors import ConcurrentRunError

__all__ = [
    "hold_shared",
    "pipelines_lock_name",
    "release",
    "run_lock_name",
    "take",
    "take_run_lock",
    "wait_for_no_pipelines",
]

log = logging.getLogger("pgferry")

_TRY = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
_WAIT = "SELECT pg_advisory_lock(hashtextextended($1, 0))"
_SHARED = "SELECT pg_advisory_lock_shared(hashtextextended($1, 0))"
_RELEASE = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"


def run_lock_name(job: str, partition: str) -> str:
    """The text hashed into the run lock of a (job, partition)."""
    return f"pgferry:{job}\x1f{partition}"


def pipelines_lock_name(job: str, partition: str) -> str:
    """The text hashed into the lock a job's pipelines hold in shared mode while they run."""
    return run_lock_name(job, partition) + "\x1fpipelines"


async def take(conn: asyncpg.Connection, name: str, *, wait: float, job: str, holder: str) -> None:
    """Take the session advisory lock ``name``, waiting up to ``wait`` seconds.

    Args:
        holder: Who holds the lock when it is busy, for the messages ("another run of job
            'x' partition ''").

    Raises:
        ConcurrentRunError: ``holder`` still held it after ``wait`` seconds.
    """
    if await conn.fetchval(_TRY, name):
        return
    log.warning("job %s: %s is active, waiting up to %g s", job, holder, wait)
    try:
        await conn.execute(
            "SELECT set_config('lock_timeout', $1, false)", f"{max(1, int(wait * 1000))}ms"
        )
        await conn.execute(_WAIT, name)
    except asyncpg.LockNotAvailableError as exc:
        raise ConcurrentRunError(
            f"{holder} is still active after {wait:g} s (lock_wait)", job=job, stage="plan"
        ) from exc
    finally:
        if not conn.is_closed():
            await conn.execute("RESET lock_timeout")


async def release(conn: asyncpg.Connection, name: str) -> None:
    """Release a session advisory lock (closing the connection releases it too)."""
    await conn.execute(_RELEASE, name)


async def hold_shared(conn: asyncpg.Connection, name: str) -> None:
    """Hold ``name`` in shared mode for the life of ``conn``."""
    await conn.execute(_SHARED, name)


async def take_run_lock(conn: asyncpg.Connection, job: str, partition: str, wait: float) -> None:
    """Take the run lock of (job, partition), waiting up to ``wait`` seconds.

    Raises:
        ConcurrentRunError: Another run held it for longer.
    """
    await take(
        conn,
        run_lock_name(job, partition),
        wait=wait,
        job=job,
        holder=f"another run of job {job!r} partition {partition!r}",
    )


async def wait_for_no_pipelines(
    conn: asyncpg.Connection, job: str, partition: str, wait: float
) -> None:
    """Wait until no pipeline of an earlier run of the job is alive (up to ``wait`` seconds).

    Raises:
        ConcurrentRunError: One still was after ``wait`` seconds.
    """
    name = pipelines_lock_name(job, partition)
    await take(
        conn, name, wait=wait, job=job, holder=f"a pipeline of an earlier run of job {job!r}"
    )
    await release(conn, name)
