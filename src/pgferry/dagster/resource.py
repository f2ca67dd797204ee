"""The Dagster resource: connection strings and defaults shared by every pgferry asset."""

from __future__ import annotations

import logging
from typing import Any

import dagster as dg
from pydantic import Field

from pgferry import run as _run
from pgferry._dsn import mask_dsn
from pgferry.engine import ProgressLogger
from pgferry.errors import ConfigError
from pgferry.result import RunResult
from pgferry.spec import Job

__all__ = ["PgferryResource"]

# Progress is logged at most this often (seconds): one line per batch floods the event log.
_PROGRESS_EVERY = 10.0


class PgferryResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Connection strings and defaults for pgferry assets (resource key ``pgferry``).

    Example::

        dg.Definitions(
            assets=[orders],
            resources={
                "pgferry": PgferryResource(
                    source_dsn=dg.EnvVar("PGFERRY_SOURCE_DSN"),
                    target_dsn=dg.EnvVar("PGFERRY_TARGET_DSN"),
                )
            },
        )

    Attributes:
        source_dsn: DSN of the source database; when set, it replaces the job's.
        target_dsn: DSN of the target database (which also holds pgferry's ledger); when
            set, it replaces the job's.
        batch_size: Rows per batch for jobs that do not set their own.
        workers: Transform processes for jobs that do not set their own (``0``: inline).
    """

    source_dsn: str | None = Field(
        default=None, description="DSN of the source database (use dg.EnvVar)."
    )
    target_dsn: str | None = Field(
        default=None, description="DSN of the target database, which holds the ledger."
    )
    batch_size: int | None = Field(
        default=None, description="Rows per batch for jobs that do not set batch_size."
    )
    workers: int | None = Field(
        default=None, description="Transform processes for jobs that do not set workers."
    )

    def resolve(self, job: Job) -> Job:
        """The job as it will run: DSNs and defaults from the resource filled in.

        Raises:
            ConfigError: Neither the resource nor the job gives a DSN for a side.
        """
        changes: dict[str, Any] = {}
        for side, dsn in (("source", self.source_dsn), ("target", self.target_dsn)):
            current = getattr(job, side)
            if dsn:
                changes[side] = {**current.model_dump(), "dsn": dsn}
            elif not current.dsn:
                raise ConfigError(
                    f"job {job.name!r} has no {side} DSN: set {side}_dsn on the pgferry "
                    f"resource (e.g. dg.EnvVar('PGFERRY_{side.upper()}_DSN')) or "
                    f"{side}.dsn in the job",
                    job=job.name,
                )
        # Only knobs the job left at their defaults take the resource's value.
        for knob in ("batch_size", "workers"):
            value = getattr(self, knob)
            if value is not None and knob not in job.model_fields_set:
                changes[knob] = value
        return job.with_overrides(**changes) if changes else job

    def run(
        self, job: Job, *, log: logging.Logger | dg.DagsterLogManager | None = None
    ) -> RunResult:
        """Run ``job`` with the resource's DSNs and defaults; blocking.

        Args:
            job: The job; its DSNs may be unset.
            log: Where to report progress (a Dagster ``context.log``), at most every 10 s.

        Raises:
            PgferryError: The run failed; ``exc.result`` holds the failed RunResult.
        """
        resolved = self.resolve(job)
        if log is not None:
            part = f" partition {resolved.partition.name!r}" if resolved.partition else ""
            log.info(
                f"pgferry: job {resolved.name!r}{part}: {mask_dsn(resolved.source.dsn)} -> "
                f"{mask_dsn(resolved.target.dsn)} table {resolved.target.table} "
                f"(mode {resolved.target.mode})"
            )
        progress = ProgressLogger(log, resolved.name, _PROGRESS_EVERY) if log is not None else None
        return _run(resolved, on_progress=progress)
