"""One attempt of a job whose target is an HTTP endpoint.

The same as a PostgreSQL attempt without the parts that need a target database: fresh source and
state connections, the ledger read from ``state.dsn``, the source planned from it, and the rows
lane feeding an :class:`~pgferry.engine.sinks.http.HttpSink`. There is no binary pipe (rows are
encoded as JSON in Python) and no parallel pipelines.
"""

from __future__ import annotations

import asyncio
import logging

from pgferry import keys
from pgferry.connection import close_quietly
from pgferry.engine.connect import connect_side
from pgferry.engine.lanes.base import LaneContext
from pgferry.engine.lanes.rows import run_rows
from pgferry.engine.plan import plan_source
from pgferry.engine.progress import ProgressCallback
from pgferry.engine.sinks.http import HttpSink
from pgferry.errors import ConfigError
from pgferry.result import RunResult
from pgferry.spec import Job
from pgferry.state import StateStore

__all__ = ["attempt_http"]

log = logging.getLogger("pgferry")


async def attempt_http(
    job: Job, store: StateStore, result: RunResult, on_progress: ProgressCallback | None
) -> None:
    """One attempt: connect, plan from the ledger, send the rows, finish."""
    src = state = None
    sink: HttpSink | None = None
    try:
        src = await connect_side(job, "source", purpose="reader")
        job, choice = await keys.resolve(src, job)
        if not job.read_key:
            raise ConfigError(
                "an HTTP target needs a key, and the source table has no primary key or "
                f"unique index on NOT NULL columns ({choice.why}): set source.key; requests "
                "are formed from the rows in key order and named by their first and last keys",
                job=job.name,
            )
        if choice.origin != "job":
            log.info("job %s: key %s: %s", job.name, list(choice.columns or ()), choice.why)
        state = await connect_side(job, "target", purpose="ledger")  # state.dsn
        ledger = await store.read(state, job.name, result.partition)
        plan = await plan_source(src, job, ledger)
        if plan.start is not None:
            what = "watermark" if plan.position_kind == "watermark" else "an earlier run's progress"
            log.info("job %s: continuing after %s (%s)", job.name, what, ", ".join(plan.start))
        sink = HttpSink(job, state, store, result, plan)
        await run_rows(LaneContext(job, src, sink, plan, result, on_progress))
        # Also when no row came: a run that resumed at the end still ends its progress.
        await sink.finish()
    except BaseException:
        if sink is not None:
            await asyncio.shield(sink.abort())
        raise
    finally:
        await close_quietly(src)
        await close_quietly(state)
