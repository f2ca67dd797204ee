"""A Polars transform in Dagster: ``pgferry_asset`` takes it with no other change."""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_support import materialization

from helpers import Databases, execute, fetch
from pgferry.dagster import PgferryResource, pgferry_asset
from pgferry.demo import workload_statements

COLUMNS = "id, first_name, last_name, age, email, created_at::text, score::text, payload::text"


def test_a_polars_transform_materialises(dbs: Databases) -> None:
    for statement in workload_statements(3_000):
        execute(dbs.source, statement)
    asset = pgferry_asset(
        name="people",
        source_table="bench_src",
        target_table="people",
        key_columns="id",
        transform="pgferry.demo:split_name_polars",
        mode="upsert",
        options={"batch_size": 1000},
    )
    resources = {"pgferry": PgferryResource(source_dsn=dbs.source, target_dsn=dbs.target)}
    meta: dict[str, Any] = materialization(dg.materialize([asset], resources=resources))
    assert (meta["pgferry/path"], meta["dagster/row_count"]) == ("columnar", 3_000)
    assert meta["pgferry/rows_written"] == 3_000
    want = fetch(dbs.source, f"SELECT {COLUMNS} FROM bench_expected ORDER BY id")
    got = fetch(dbs.target, f"SELECT {COLUMNS} FROM people ORDER BY id")
    assert [tuple(r) for r in got] == [tuple(r) for r in want]
    # Materialised again: the upsert rewrites nothing.
    again = materialization(dg.materialize([asset], resources=resources))
    assert (again["pgferry/rows_read"], again["pgferry/rows_written"]) == (3_000, 0)
