"""Airflow reports schema evolution (#11 §5): the XCom (the RunResult) lists the changes and
the OpenLineage schema facet of the target shows the new schema. The operator runs as a task
runner calls it: ``execute`` then ``get_openlineage_facets_on_complete``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from airflow.sdk import DAG, Connection
from airflow.sdk.execution_time.context import OutletEventAccessors

from helpers import Databases, execute
from pgferry.airflow import PgferryHook, PgferryOperator


def test_xcom_and_lineage_show_the_evolved_target(
    dbs: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsns = {"src": dbs.source, "dwh": dbs.target}

    def get_connection(cls: Any, conn_id: str) -> Connection:
        uri = dsns[conn_id].replace("postgresql://", "postgres://", 1)
        return Connection.from_uri(uri, conn_id=conn_id)

    monkeypatch.setattr(PgferryHook, "get_connection", classmethod(get_connection))
    execute(
        dbs.source,
        "CREATE TABLE drift (id int PRIMARY KEY, a text);"
        "INSERT INTO drift SELECT g, 'a' FROM generate_series(1, 20) g",
    )
    with DAG("d", schedule=None, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)):
        op = PgferryOperator(
            task_id="copy", source_conn_id="src", target_conn_id="dwh", source_table="drift",
            target_table="drift", mode="upsert", progress_interval=0,
        )  # fmt: skip
    first = op.execute({"outlet_events": OutletEventAccessors()})  # type: ignore[arg-type]
    assert first["schema_changes"] == []
    execute(dbs.source, "ALTER TABLE drift ADD COLUMN b numeric(10,2); UPDATE drift SET b = 1")
    out = op.execute({"outlet_events": OutletEventAccessors()})  # type: ignore[arg-type]
    assert out["schema_changes"] == [
        {"column": "b", "change": "add column", "from": None, "to": "numeric(10,2)"}
    ]
    lineage = op.get_openlineage_facets_on_complete(None)
    (output,) = lineage.outputs
    fields = [(f.name, f.type) for f in output.facets["schema"].fields]
    assert fields == [("id", "integer"), ("a", "text"), ("b", "numeric(10,2)")]
