"""One attempt of a job whose target is an HTTP endpoint.

The same as a PostgreSQL attempt without the parts that need a target database: fresh source and
state connections, the ledger read from ``state.dsn``, the source planned from it, and the rows
lane feeding an :class:`~pgferry.engine.sinks.http.HttpSink`. There is no binary pipe (rows are
encoded as JSON in Python) and no parallel pipelines.
"""

from __future__ import annotations

import asyncio
import logging

from pgferry.connection import close_quietly, connect
from pgferry.engine.pipeline import ProgressCallback, run_rows
from pgferry.engine.plan import plan_source
from pgferry.engine.sinks.http import HttpSink
from pgferry.errors import ConfigError
from pgferry.result import RunResult
from pgferry.spec import Job
from pgferry.state import StateStore

__all__ = ["attempt_http", "state_dsn"]

log = logging.getLogger("pgferry")


def state_dsn(job: Job) -> str:
    """The DSN of the database holding the job's state when the target is not PostgreSQL.

    Raises:
        ConfigError: The job has no ``state.dsn``.
    """
    dsn = job.state.dsn if job.state is not None else None
    if not dsn:
        raise ConfigError(
            "an HTTP target needs state.dsn: a PostgreSQL database for pgferry's ledger, runs "
            "and rejects (pgferry never writes to the source unasked; name the source's DSN "
            "there to keep the state in the source database)",
            job=job.name,
        )
    return dsn


async def attempt_http(
    job: Job, store: StateStore, result: RunResult, on_progress: ProgressCallback | None
) -> None:
    """One attempt: connect, plan from the ledger, send the rows, finish."""
    src = state = None
    sink: HttpSink | None = None
    try:
        src = await connect(
            job.source.dsn, role="source", job=job.name, timeout=job.connect_timeout,
            statement_timeout=job.statement_timeout, purpose="reader",
        )  # fmt: skip
        state = await connect(
            state_dsn(job), role="state", job=job.name, timeout=job.connect_timeout,
            statement_timeout=job.statement_timeout, purpose="ledger",
        )  # fmt: skip
        ledger = await store.read(state, job.name, result.partition)
        plan = await plan_source(src, job, ledger)
        if plan.start is not None:
            what = "watermark" if plan.position_kind == "watermark" else "an earlier run's progress"
            log.info("job %s: continuing after %s (%s)", job.name, what, ", ".join(plan.start))
        sink = HttpSink(job, state, store, result, plan)
        await run_rows(job, src, sink, plan, result, on_progress)
        await sink.finish()
    except BaseException:
        if sink is not None:
            await asyncio.shield(sink.abort())
        raise
    finally:
        await close_quietly(src)
        await close_quietly(state)
