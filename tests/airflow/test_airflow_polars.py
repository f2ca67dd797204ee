"""A Polars transform in Airflow: the operator takes it with no other change.

The DAG is ``pgferry_full_copy``'s, written to a folder of its own with a Polars version of
``clean_customer`` beside it, and run by ``airflow dags test`` with the session's connections.
The result must be what the row transform makes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow_harness import AirflowEnv

from helpers import fetch

pytestmark = pytest.mark.slow

DAG = """
import datetime as dt

import polars as pl
from airflow.sdk import dag

import pgferry
from pgferry.airflow import PgferryOperator


@pgferry.polars_transform
def clean_customers(frame: pl.DataFrame) -> pl.DataFrame:
    name = pl.col("name").str.strip_chars()
    return frame.select(
        "id",
        first_name=name.str.splitn(" ", 2).struct.field("field_0"),
        last_name=name.str.splitn(" ", 2).struct.field("field_1").fill_null(""),
        email=pl.col("email").str.strip_chars().str.to_lowercase(),
        country="country",
        signed_up_at="signed_up_at",
    )


@dag(dag_id="pgferry_polars_copy", schedule=None,
     start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC), catchup=False)
def pgferry_polars_copy() -> None:
    PgferryOperator(
        task_id="copy_customers",
        source_conn_id="pg_source",
        target_conn_id="pg_target",
        source_table="public.customers",
        target_table="public.customers_polars",
        transform="pgferry_polars_copy:clean_customers",
        mode="replace",
        batch_size=500,
    )


pgferry_polars_copy()
"""


def clean(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """What ``example_transforms.clean_customer`` makes of a customers row."""
    ident, name, email, country, signed_up_at = row
    first, _, last = name.strip().partition(" ")
    return (ident, first, last, email.strip().lower(), country, signed_up_at)


def test_a_polars_transform_runs_in_airflow(airflow_env: AirflowEnv, tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "pgferry_polars_copy.py").write_text(DAG, encoding="utf-8")
    folder = {"AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    run_id, output = airflow_env.dags_test("pgferry_polars_copy", "2024-01-02", env=folder)
    result: dict[str, Any] = airflow_env.xcom("pgferry_polars_copy", run_id, "copy_customers")
    assert result["status"] == "success", output[-3000:]
    assert (result["path"], result["rows_written"], result["batches"]) == ("columnar", 2000, 4)
    columns = "id, first_name, last_name, email, country, signed_up_at"
    got = [tuple(r) for r in fetch(airflow_env.target, f"SELECT {columns} FROM customers_polars")]
    source = fetch(airflow_env.source, "SELECT * FROM customers ORDER BY id")
    assert sorted(got) == [clean(tuple(r)) for r in source]
