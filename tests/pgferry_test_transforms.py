"""Transforms for the type round-trip tests, importable by pool workers as
``pgferry_test_transforms`` (``tests/`` is on ``sys.path``, and spawned workers inherit it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pgferry


def identity(row: Mapping[str, Any]) -> dict[str, Any]:
    """Every value passes through unchanged: the row path must write back what it read."""
    return dict(row)


def with_reprs(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row unchanged, plus ``<column>_repr``: what the transform saw, as ``repr`` text."""
    out = dict(row)
    out.update({f"{name}_repr": repr(value) for name, value in row.items() if name != "id"})
    return out


@pgferry.arrow_transform
def identity_arrow(batch: Any) -> Any:
    """Every column passes through the columnar lane unchanged, as an Arrow batch."""
    return batch


@pgferry.polars_transform
def identity_polars(frame: Any) -> Any:
    """Every column passes through the columnar lane unchanged, as a Polars frame."""
    return frame
