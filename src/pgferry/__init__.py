"""pgferry: fast, safe, resumable PostgreSQL-to-PostgreSQL transfers.

Typical use::

    import pgferry

    job = pgferry.Job(
        source={"dsn": "postgresql://…/src", "table": "public.orders"},
        target={"dsn": "postgresql://…/dwh", "table": "staging.orders"},
        transform="my_package.transforms:clean_order",
    )
    result = pgferry.run(job)
    print(result.rows_written)
"""

from __future__ import annotations

import asyncio

from pgferry._dsn import mask_dsn
from pgferry.arrow import arrow_transform, polars_transform
from pgferry.connection import Interval
from pgferry.engine import Progress, ProgressCallback, ProgressLogger, run_async
from pgferry.engine.functions import batch_transform
from pgferry.engine.host import loop_factory
from pgferry.errors import (
    ConcurrentRunError,
    ConfigError,
    ConnectError,
    ExtractError,
    JobValidationError,
    LoadError,
    PgferryError,
    SchemaError,
    TransformError,
    TransformImportError,
    Transient,
)
from pgferry.jobfile import load_job
from pgferry.lineage import column_lineage
from pgferry.partitions import plan_partitions, plan_partitions_async
from pgferry.result import RunResult, StageStats
from pgferry.spec import Incremental, Job, Partition, Source, Target

__version__ = "0.1.0"

__all__ = [
    "ConcurrentRunError",
    "ConfigError",
    "ConnectError",
    "ExtractError",
    "Incremental",
    "Interval",
    "Job",
    "JobValidationError",
    "LoadError",
    "Partition",
    "PgferryError",
    "Progress",
    "ProgressCallback",
    "ProgressLogger",
    "RunResult",
    "SchemaError",
    "Source",
    "StageStats",
    "Target",
    "TransformError",
    "TransformImportError",
    "Transient",
    "__version__",
    "arrow_transform",
    "batch_transform",
    "column_lineage",
    "load_job",
    "mask_dsn",
    "plan_partitions",
    "plan_partitions_async",
    "polars_transform",
    "run",
    "run_async",
]


def run(job: Job, *, on_progress: ProgressCallback | None = None) -> RunResult:
    """Run ``job`` and return its :class:`RunResult` (blocking; uses uvloop when installed).

    Raises:
        PgferryError: The run failed; ``exc.result`` is the failed RunResult.
    """
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(run_async(job, on_progress=on_progress))
