"""Running the engine inside an Airflow task: query parameters and progress lines."""

from __future__ import annotations

import datetime as dt
import decimal
import time
from typing import Any, Protocol

import pgferry

__all__ = ["ProgressLog", "query_param"]

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
