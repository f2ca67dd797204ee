"""Transforms used by the integration tests, importable by pool workers as ``ferry_transforms``."""

from __future__ import annotations

import time
from typing import Any

from pgferry import batch_transform


def split_name(row: dict[str, Any]) -> dict[str, Any]:
    """The standard benchmark transform."""
    first, _, last = row["name"].partition(" ")
    return {
        "id": row["id"],
        "first_name": first,
        "last_name": last,
        "age": row["age"],
        "email": row["email"],
        "created_at": row["created_at"],
        "score": row["score"],
        "payload": row["payload"],
    }


@batch_transform
def split_name_batch(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The standard transform as a batch transform."""
    return [split_name(r) for r in rows]


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
