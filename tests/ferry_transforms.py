"""Transforms used by the integration tests, importable by pool workers as ``ferry_transforms``."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Any

import pgferry
from pgferry import demo

# The standard benchmark transform, as pgferry ships it for the demo.
split_name = demo.split_name
split_name_batch = demo.split_name_batch


def identity(row: dict[str, Any]) -> dict[str, Any]:
    return row


def drop_odd(row: dict[str, Any]) -> dict[str, Any] | None:
    """Keep rows with an even id."""
    return row if row["id"] % 2 == 0 else None


def fan_out(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Two rows per input row, with a new column ``copy``."""
    return [{"id": row["id"], "copy": n, "name": row["name"]} for n in (1, 2)]


def fail_on_7(row: dict[str, Any]) -> dict[str, Any]:
    if row["id"] == 7:
        raise ValueError("seven is not allowed")
    return row


def slow_identity(row: dict[str, Any]) -> dict[str, Any]:
    """Slow enough that cancelling mid-run is easy to hit."""
    time.sleep(0.0005)
    return row


def age_as_text(row: dict[str, Any]) -> dict[str, Any]:
    row["age"] = f"{row['age']} years"
    return row


not_callable = 42


def split_name_outside_workers(row: dict[str, Any]) -> dict[str, Any]:
    """``split_name``, but a pool worker running it exits at once: every worker dies."""
    if multiprocessing.parent_process() is not None:
        os._exit(1)
    return split_name(row)


def split_name_killed_at_1000(row: dict[str, Any]) -> dict[str, Any]:
    """``split_name``; a pool worker reaching id 1000 is SIGKILLed, as by the OOM killer."""
    if row["id"] == 1000 and multiprocessing.parent_process() is not None:
        os.kill(os.getpid(), signal.SIGKILL)
    return split_name(row)


def with_pid(row: dict[str, Any]) -> dict[str, Any]:
    """The row plus ``pid``: the process that transformed it."""
    return {**row, "pid": os.getpid()}


def split_name_failing_at_2000(row: dict[str, Any]) -> dict[str, Any]:
    """The standard transform, refusing row 2000 (a terminal transform error)."""
    if row["id"] == 2000:
        raise ValueError("two thousand is not allowed")
    return demo.split_name(row)


def slow_split_name(row: dict[str, Any]) -> dict[str, Any]:
    """The standard transform at 0.5 ms a row: slow enough to be killed mid-run."""
    time.sleep(0.0005)
    return demo.split_name(row)


split_name_arrow = demo.split_name_arrow
split_name_polars = demo.split_name_polars


@pgferry.polars_transform
def polars_fail_on_7(frame: Any) -> Any:
    """Raises on a batch holding id 7 (so halving the batch isolates that row)."""
    if (frame["id"] == 7).any():
        raise ValueError("seven is not allowed")
    return frame


@pgferry.arrow_transform
def arrow_returns_a_list(batch: Any) -> Any:
    return batch.to_pylist()


@pgferry.polars_transform
def polars_slow_identity(frame: Any) -> Any:
    """Slow enough per batch that a backend can be terminated mid-run."""
    time.sleep(0.02)
    return frame
