"""Progress reports: what a run tells its caller after every committed batch.

The CLI draws them as a bar; the Airflow operator and the Dagster resource log them as
periodic lines through one :class:`ProgressLogger`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Progress", "ProgressCallback", "ProgressLogger"]

_MB = 1024 * 1024


@dataclass(frozen=True)
class Progress:
    """A progress report, sent after every committed batch (and every chunk on the pipe).

    Attributes:
        rows_read: Source rows read so far (``rows`` path).
        rows_written: Rows committed to the target so far (``rows`` path).
        bytes_moved: COPY bytes streamed so far (``pipe`` path).
        total_rows: The planner's estimate of the source's rows, when reading a table.
        path: ``rows`` or ``pipe``.
    """

    rows_read: int
    rows_written: int
    bytes_moved: int
    total_rows: int | None
    path: str


ProgressCallback = Callable[[Progress], None]


class _InfoLog(Protocol):
    def info(self, msg: str, /) -> object: ...


class ProgressLogger:
    """A :data:`ProgressCallback` that logs one line every ``interval`` seconds at most.

    One line per batch would flood a task log or an event log; a line every few seconds shows
    that the run moves and how fast (rows and rows/s, or MB and MB/s on the pipe).

    Args:
        log: Anything with an ``info(str)`` method (a ``logging.Logger``, Airflow's task
            logger, Dagster's log manager).
        job: The job's name, shown in every line.
        interval: Seconds between two lines.
    """

    def __init__(self, log: _InfoLog, job: str, interval: float = 10.0) -> None:
        self.log = log
        self.job = job
        self.interval = interval
        self.start = self.last = time.monotonic()

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        self.log.info(self.line(progress, max(now - self.start, 1e-9)))

    def line(self, progress: Progress, elapsed: float) -> str:
        """The text of one progress line after ``elapsed`` seconds."""
        if progress.path == "pipe":
            mb = progress.bytes_moved / _MB
            return f"pgferry {self.job}: {mb:.1f} MB copied ({mb / elapsed:.1f} MB/s)"
        total = f" of ~{progress.total_rows}" if progress.total_rows else ""
        return (
            f"pgferry {self.job}: {progress.rows_read}{total} rows read, "
            f"{progress.rows_written} written ({progress.rows_written / elapsed:.0f} rows/s)"
        )
