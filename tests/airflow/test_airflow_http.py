"""``dags/pgferry_to_api.py`` run with ``airflow dags test`` against a real local endpoint."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest
from airflow_harness import AirflowEnv

from helpers import fetch, fetchval
from httpserver import ApiServer

pytestmark = pytest.mark.slow

API_KEY = "s3cret-api-key-123"


@pytest.fixture(scope="module")
def to_api(airflow_env: AirflowEnv) -> dict[str, Any]:
    with ApiServer() as api:
        # An http connection as apache-airflow-providers-http reads it: extras are headers.
        conn = json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": api.port,
             "extra": {"X-Api-Key": API_KEY}}
        )  # fmt: skip
        env = {"AIRFLOW_CONN_API_HTTP": conn}
        # Other Airflow tests share the source (the incremental example adds orders).
        orders = fetchval(airflow_env.source, "SELECT count(*) FROM orders")
        first_run, output = airflow_env.dags_test("pgferry_to_api", "2024-01-02", env=env)
        second_run, _ = airflow_env.dags_test("pgferry_to_api", "2024-01-03", env=env)
    return {
        "api": api,
        "output": output,
        "first": airflow_env.xcom("pgferry_to_api", first_run, "send_orders"),
        "second": airflow_env.xcom("pgferry_to_api", second_run, "send_orders"),
        "first_run": first_run,
        "orders": orders,
    }


def test_rows_arrive_once(airflow_env: AirflowEnv, to_api: dict[str, Any]) -> None:
    api: ApiServer = to_api["api"]
    source = {r["id"]: r for r in fetch(airflow_env.source, "SELECT * FROM orders")}
    assert sorted(api.rows) == sorted(source)
    assert api.duplicates == 0
    assert api.rows[10]["amount"] == 12.5
    assert api.rows[10]["updated_at"] == source[10]["updated_at"].isoformat()
    assert {h["X-Api-Key"] for h in api.headers_seen} == {API_KEY}
    assert {h["Content-Type"] for h in api.headers_seen} == {"application/json"}
    # Incremental: the second run had nothing new to send.
    assert to_api["second"]["rows_written"] == 0
    state = "SELECT rows_written FROM pgferry.ledger WHERE job = 'pgferry_to_api.send_orders'"
    assert fetchval(airflow_env.target, state) == len(source)


def test_xcom_and_logs_hold_no_secret(to_api: dict[str, Any]) -> None:
    first = to_api["first"]
    expected = ("success", "http", to_api["orders"])
    assert (first["status"], first["mode"], first["rows_written"]) == expected
    assert API_KEY not in json.dumps(first)
    assert API_KEY not in to_api["output"]


def test_endpoint_asset_and_lineage(airflow_env: AirflowEnv, to_api: dict[str, Any]) -> None:
    api: ApiServer = to_api["api"]
    uri = f"http://127.0.0.1:{api.port}/orders"
    events = airflow_env.asset_events(uri)
    assert [e["run_id"] for e in events][:1] == [to_api["first_run"]]
    assert events[0]["extra"]["rows_written"] == to_api["orders"]
    outputs = [
        o
        for e in airflow_env.lineage_events()
        if e.get("eventType") == "COMPLETE" and e["job"]["name"] == "pgferry_to_api.send_orders"
        for o in e.get("outputs", [])
    ]
    assert outputs, "no OpenLineage output for the endpoint"
    netloc = urllib.parse.urlsplit(uri).netloc
    assert (outputs[0]["namespace"], outputs[0]["name"]) == (f"http://{netloc}", "/orders")
