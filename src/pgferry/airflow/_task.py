"""Running the engine inside an Airflow task: parameters, progress lines, the transform pool."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import sys
import time
from collections.abc import Iterator
from typing import Any, Protocol

import pgferry

__all__ = ["ProgressLog", "pool_workers_skip_main", "query_param"]

_MB = 1024 * 1024


class _Log(Protocol):
    def info(self, event: Any, *args: Any, **kw: Any) -> Any: ...


@contextlib.contextmanager
def pool_workers_skip_main() -> Iterator[None]:
    """Keep spawned transform workers from re-importing this process's ``__main__``.

    A spawned process first re-imports its parent's main module. In a task that module is the
    ``airflow`` command, and importing Airflow in a child of a task process fails (the task
    process is denied the metadata database), so every worker would die at start. The workers
    need nothing from ``__main__``: the transform is imported by its path.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, Any] = {
        k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__
    }
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


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
