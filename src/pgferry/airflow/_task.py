"""Running the engine inside an Airflow task: arguments, run keys and progress lines."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import time
from collections.abc import Mapping
from typing import Any, Protocol

import pgferry
from pgferry.errors import ConfigError
from pgferry.spec import Partition

__all__ = ["ProgressLog", "partition_data", "query_param", "run_key_of"]

_MB = 1024 * 1024


class _Log(Protocol):
    def info(self, event: Any, *args: Any, **kw: Any) -> Any: ...


def query_param(value: Any) -> Any:
    """A query parameter as a job takes it.

    Dates, times and decimals (a template rendered as a native object) become text, which the
    server converts to the parameter's type.
    """
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def partition_data(value: Any) -> dict[str, Any] | None:
    """A partition argument (model, mapping or JSON text) as a plain mapping with a name."""
    if value is None or value == "":
        return None
    if isinstance(value, Partition):
        return value.model_dump()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigError(
                f"partition: expected a mapping or JSON object, got {value!r}"
            ) from exc
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"partition: expected a pgferry.Partition or a mapping, got {type(value).__name__}"
        )
    data = dict(value)
    if not data.get("name") and data.get("column"):
        low = "" if data.get("lower") is None else data["lower"]
        high = "" if data.get("upper") is None else data["upper"]
        data["name"] = f"{data['column']}[{low}..{high})"
    return data


def run_key_of(context: Mapping[str, Any]) -> str | None:
    """The default run key (``DAG id/run id/task id/map index``) from a task context, or
    ``None`` without a task instance."""
    ti = context.get("ti")
    if ti is None:
        return None
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}"


class ProgressLog:
    """Progress as periodic task-log lines (rows and rows/s), not a terminal progress bar."""

    def __init__(self, log: _Log, job: str, interval: float) -> None:
        self.log = log
        self.job = job
        self.interval = interval
        self.start = self.last = time.monotonic()

    def __call__(self, progress: pgferry.Progress) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        if progress.path == "pipe":
            self.log.info(
                "pgferry %s: %.1f MB copied (%.1f MB/s)",
                self.job,
                progress.bytes_moved / _MB,
                progress.bytes_moved / _MB / elapsed,
            )
            return
        total = f" of ~{progress.total_rows}" if progress.total_rows else ""
        self.log.info(
            "pgferry %s: %d%s rows read, %d written (%.0f rows/s)",
            self.job,
            progress.rows_read,
            total,
            progress.rows_written,
            progress.rows_written / elapsed,
        )
