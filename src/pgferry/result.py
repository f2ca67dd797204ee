"""RunResult and stage statistics: what a run did, in plain JSON-able data.

Both orchestrator wrappers publish a :class:`RunResult` as it is (Airflow XCom and OpenLineage
facets, Dagster ``MaterializeResult`` metadata); nothing is parsed from logs.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["RunResult", "StageStats"]

Status = Literal["running", "success", "failed", "skipped"]


@dataclass
class StageStats:
    """Time one stage spent working and waiting.

    Attributes:
        busy_s: Seconds doing its own work (fetching, transforming, copying and committing).
        wait_s: Seconds blocked on a neighbouring stage (an empty input queue or a full output
            queue). The stage with the most busy time and the least wait is the bottleneck.
    """

    busy_s: float = 0.0
    wait_s: float = 0.0

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Count the time spent in the ``with`` block as busy."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.busy_s += time.perf_counter() - start

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Count the time spent in the ``with`` block as waiting."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.wait_s += time.perf_counter() - start


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass
class RunResult:
    """The outcome of one run.

    Attributes:
        job: The job name.
        run_id: A fresh UUID for every run.
        partition: The partition's name (empty when the job has none).
        status: ``success`` or ``failed`` (``running`` while in progress); ``skipped`` when
            the job's ``run_key`` had already committed a full append (nothing was done).
        mode: The target mode.
        path: ``pipe`` (binary COPY, no per-row Python) or ``rows`` (decoded rows).
        workers: Transform processes used (0 = inline). With parallel pipelines, the number of
            pipelines: each is a process that transforms its key range inline.
        rows_read: Rows read from the source.
        rows_written: Rows written to the target.
        rows_rejected: Rows set aside in the rejects table.
        rows_deleted: Target rows deleted by ``sync_deletes``, or by a partition reload
            (``partition.replace``) before it loads its slice again.
        batches: Batches committed.
        attempts: Attempts the run took (retries after transient errors add to it).
        bytes_written: Growth of the target table's size in bytes (heap and TOAST), measured
            on the server; the size of the new table for ``replace``.
        duration_s: Wall time of the run.
        started_at: UTC start time.
        finished_at: UTC end time.
        watermark_before: Incremental position before the run, if any.
        watermark_after: Incremental position after the run, if any.
        stages: ``extract``, ``transform`` and ``load`` :class:`StageStats`.
        error: The error message of a failed run.
        run_key: The job's ``run_key``, if it has one.
        committed_by: For a skipped run, the run that committed the rows under ``run_key``.
        schema_changes: Changes the schema step made to the target, each
            ``{column, change, from, to}`` (``change``: ``add column``, ``widen type``,
            ``change type`` or ``drop not null``).
    """

    job: str
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    partition: str = ""
    status: Status = "running"
    mode: str = "append"
    path: str = "rows"
    workers: int = 0
    rows_read: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    rows_deleted: int = 0
    batches: int = 0
    attempts: int = 0
    bytes_written: int = 0
    duration_s: float = 0.0
    started_at: str = ""
    finished_at: str = ""
    watermark_before: Any = None
    watermark_after: Any = None
    stages: dict[str, StageStats] = field(
        default_factory=lambda: {s: StageStats() for s in ("extract", "transform", "load")}
    )
    error: str | None = None
    run_key: str | None = None
    committed_by: str | None = None
    schema_changes: list[dict[str, str | None]] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        """Rows written per second of wall time."""
        return self.rows_written / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (datetimes as ISO 8601, Decimals and UUIDs as text)."""
        data = asdict(self)
        for stage in data["stages"].values():
            stage["busy_s"] = round(stage["busy_s"], 6)
            stage["wait_s"] = round(stage["wait_s"], 6)
        data["duration_s"] = round(self.duration_s, 6)
        return {k: _jsonable(v) for k, v in data.items()}

    def to_json(self, **kwargs: Any) -> str:
        """The result as one JSON object."""
        return json.dumps(self.to_dict(), **kwargs)
