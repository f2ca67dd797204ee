"""Opening a job's connections: one function, so every one has the job's timeouts and a name."""

from __future__ import annotations

from typing import Literal

import asyncpg

from pgferry.connection import connect
from pgferry.spec import Job

__all__ = ["connect_side"]


async def connect_side(
    job: Job, side: Literal["source", "target"], *, purpose: str | None = None
) -> asyncpg.Connection:
    """Connect to the job's source or target with its timeouts.

    Args:
        purpose: ``reader``, ``loader``, ``control``…: shown in ``application_name``, so that a
            DBA (and the tests) can tell the connections apart.
    """
    return await connect(
        (job.source if side == "source" else job.target).dsn,
        role=side,
        job=job.name,
        timeout=job.connect_timeout,
        statement_timeout=job.statement_timeout,
        purpose=purpose,
    )
