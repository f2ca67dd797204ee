"""What every lane gets: the job, the reader's connection, the sink, the plan and the result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from pgferry.engine.plan import SourcePlan
from pgferry.engine.progress import ProgressCallback
from pgferry.engine.sinks.base import Sink
from pgferry.result import RunResult
from pgferry.spec import Job

__all__ = ["LaneContext"]


@dataclass(frozen=True)
class LaneContext:
    """One pipeline's inputs.

    Attributes:
        job: The job.
        src: The source connection (the reader).
        sink: Where the rows go.
        plan: The source plan (query, columns, position, transaction scope).
        result: The run's result, updated as batches commit.
        on_progress: Called after every committed batch.
        snapshot: Read in this exported snapshot (a pipeline of a parallel run).
        prepared: The sink was prepared by the coordinator of a parallel run: its columns.
        on_snapshot: Called once the reader's transaction has imported ``snapshot``.
    """

    job: Job
    src: asyncpg.Connection
    sink: Sink
    plan: SourcePlan
    result: RunResult
    on_progress: ProgressCallback | None = None
    snapshot: str | None = None
    prepared: Sequence[str] | None = None
    on_snapshot: Callable[[], None] | None = None
