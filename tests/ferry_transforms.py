"""Transforms used by the integration tests, importable by pool workers as ``ferry_transforms``."""

from __future__ import annotations

import time
from typing import Any

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
