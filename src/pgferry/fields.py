"""Field types of the job spec: table names, keys and durations, parsed as users write them."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer

from pgferry.errors import ConfigError
from pgferry.sql import TableName

__all__ = ["KeyField", "Seconds", "TableField"]


def _as_table(value: Any) -> TableName:
    if isinstance(value, str | list | tuple | TableName):
        try:
            return TableName.parse(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
    raise ValueError("expected a table name (text such as schema.table, or a list of parts)")


def _as_key(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    return value


TableField = Annotated[
    TableName,
    BeforeValidator(_as_table),
    PlainSerializer(lambda t: [t.schema, t.name] if t.schema else [t.name], return_type=list),
]
KeyField = Annotated[list[str] | None, BeforeValidator(_as_key)]

_DURATION = re.compile(
    r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hours?)?\s*",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _as_seconds(value: Any) -> Any:
    """``2``, ``"2s"``, ``"500 ms"``, ``"5 minutes"`` → seconds (a bare number is seconds)."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            unit = (match.group(2) or "s").lower()
            key = "ms" if unit == "ms" or unit.startswith("milli") else unit[0]
            return float(match.group(1)) * _UNIT_SECONDS[key]
    raise ValueError(f"{value!r} is not a duration such as 2, '2s', '500 ms' or '5 minutes'")


Seconds = Annotated[float, BeforeValidator(_as_seconds), Field(gt=0)]
