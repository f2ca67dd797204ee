"""Running the engine inside an Airflow task: arguments and run keys."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Mapping
from typing import Any

from pgferry.errors import ConfigError
from pgferry.spec import Partition

__all__ = ["partition_data", "query_param", "run_key_of"]


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
