"""The standard workload and transform, shipped with the package for ``pgferry demo``.

``workload.sql`` is a copy of the project's standard benchmark workload (a test keeps the two
equal); :func:`split_name` is the standard row transform.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import asyncpg

from pgferry.arrow import arrow_transform, polars_transform
from pgferry.engine.functions import batch_transform

__all__ = [
    "load_workload",
    "split_name",
    "split_name_arrow",
    "split_name_batch",
    "split_name_polars",
    "workload_statements",
]


def split_name(row: dict[str, Any]) -> dict[str, Any]:
    """The standard row transform: split ``name`` on its first space."""
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
    """The standard transform written as a batch transform."""
    return [split_name(row) for row in rows]


_OUTPUT = ("id", "first_name", "last_name", "age", "email", "created_at", "score", "payload")


@arrow_transform
def split_name_arrow(batch: Any) -> Any:
    """The standard transform as an Arrow transform (``pyarrow.compute``, no per-row Python)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    name = batch.column("name")
    # name + " ", split once: the first part, and the rest without the space added (two C++
    # string kernels, half the time of one regular expression).
    parts = pc.split_pattern(pc.binary_join_element_wise(name, "", " "), " ", max_splits=1)
    columns = {c: batch.column(c) for c in batch.schema.names if c != "name"}
    columns["first_name"] = pc.list_element(parts, 0)
    columns["last_name"] = pc.utf8_slice_codeunits(pc.list_element(parts, 1), 0, -1)
    return pa.RecordBatch.from_arrays([columns[c] for c in _OUTPUT], names=list(_OUTPUT))


@polars_transform
def split_name_polars(frame: Any) -> Any:
    """The standard transform as a Polars transform."""
    import polars as pl

    name = pl.col("name")
    return frame.with_columns(
        first_name=name.str.splitn(" ", 2).struct.field("field_0"),
        last_name=name.str.splitn(" ", 2).struct.field("field_1").fill_null(""),
    ).select(_OUTPUT)


def workload_statements(rows: int) -> list[str]:
    """The statements of ``workload.sql`` with ``:rows`` filled in, psql meta-commands removed.

    Returned one by one because ``VACUUM`` must run outside a transaction block.
    """
    text = resources.files("pgferry").joinpath("workload.sql").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("\\")]
    body = "\n".join(ln for ln in lines if not ln.lstrip().startswith("--"))
    body = re.sub(r":rows\b", str(int(rows)), body)
    return [stmt.strip() for stmt in body.split(";") if stmt.strip()]


async def load_workload(dsn: str, rows: int) -> None:
    """Create ``bench_src`` with ``rows`` rows and the ``bench_expected`` view in ``dsn``."""
    conn = await asyncpg.connect(dsn)
    try:
        for statement in workload_statements(rows):
            await conn.execute(statement)
    finally:
        await conn.close()
