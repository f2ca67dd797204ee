"""Opening a job's connections: one function, so every one has the job's timeouts and a name."""

from __future__ import annotations

from typing import Literal

import asyncpg

from pgferry.connection import connect
from pgferry.errors import ConfigError
from pgferry.spec import Job

__all__ = ["connect_side", "state_dsn"]


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


async def connect_side(
    job: Job, side: Literal["source", "target"], *, purpose: str | None = None
) -> asyncpg.Connection:
    """Connect to the job's source or target with its timeouts.

    Args:
        purpose: ``reader``, ``loader``, ``control``…: shown in ``application_name``, so that a
            DBA (and the tests) can tell the connections apart.
    """
    if side == "target" and job.target.http is not None:
        # An HTTP target: the run's lock, history, ledger and rejects live in state.dsn.
        return await connect(
            state_dsn(job),
            role="state",
            job=job.name,
            timeout=job.connect_timeout,
            statement_timeout=job.statement_timeout,
            purpose=purpose,
        )
    return await connect(
        (job.source if side == "source" else job.target).dsn,
        role=side,
        job=job.name,
        timeout=job.connect_timeout,
        statement_timeout=job.statement_timeout,
        purpose=purpose,
    )
