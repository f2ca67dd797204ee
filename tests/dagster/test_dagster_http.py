"""``dagster_defs/to_api.py`` materialised in-process: rows to a real local endpoint."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster_support import ROOT

import pgferry
from helpers import Databases, fetch, fetchval
from httpserver import ApiServer

TOKEN = "s3cret-api-token"


def materialize(module: Any) -> dg.ExecuteInProcessResult:
    return dg.materialize([module.customers_to_api], resources=module.resources)


def test_customers_to_api(example_dbs: Databases, monkeypatch: pytest.MonkeyPatch) -> None:
    with ApiServer() as api:
        monkeypatch.setenv("PGFERRY_API_URL", api.url)
        monkeypatch.setenv("PGFERRY_STATE_DSN", example_dbs.target)
        monkeypatch.setenv("PGFERRY_API_TOKEN", TOKEN)
        import dagster_defs.to_api as module

        module = importlib.reload(module)
        first = materialize(module)
        second = materialize(module)
    assert first.success and second.success
    source = {r["id"]: r for r in fetch(example_dbs.source, "SELECT * FROM customers")}
    assert sorted(api.rows) == sorted(source)
    row = api.rows[7]
    assert row["name"] == "Customer 7" and row["email_domain"] == "example.org"
    assert row["signed_up_at"] == source[7]["signed_up_at"].isoformat()
    # The second materialisation sent the same requests under the same keys.
    assert api.duplicates == 0 and api.replays == api.accepted_requests
    assert {h["Authorization"] for h in api.headers_seen} == {f"Bearer {TOKEN}"}

    (mat,) = first.asset_materializations_for_node("pgferry_customers_to_api")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["dagster/row_count"] == len(source)
    assert meta["pgferry/rows_written"] == len(source)
    assert meta["pgferry/status"] == "success"
    assert meta["pgferry/mode"] == "http"
    assert meta["pgferry/endpoint"] == api.url
    assert mat.asset_key == dg.AssetKey(["customers_to_api"])  # name= wins over the default
    assert TOKEN not in json.dumps(meta, default=str)
    spec_meta = module.customers_to_api.specs_by_key[mat.asset_key].metadata
    assert TOKEN not in json.dumps(spec_meta["pgferry/job"].value)
    # The ledger and the run history are in the state database.
    assert fetchval(example_dbs.target, "SELECT count(*) FROM pgferry.runs") == 2


def test_default_key_and_refusals() -> None:
    from pgferry.dagster import pgferry_asset, pgferry_checks

    asset = pgferry_asset(
        source_table="public.t", key_columns="id", target_url="https://api.example.com/v1/items"
    )
    (key,) = asset.keys
    assert key == dg.AssetKey(["http", "api_example_com", "v1", "items"])
    assert asset.specs_by_key[key].kinds == {"http", "pgferry"}
    with pytest.raises(pgferry.ConfigError, match="pgferry_checks"):
        pgferry_checks(asset)


@pytest.mark.slow  # the dagster CLI in a subprocess, like test_dagster_defs.py
@pytest.mark.timeout(180)
def test_to_api_definitions_validate(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "PGFERRY_SOURCE_DSN": "postgresql://nobody@127.0.0.1:1/none",
        "PGFERRY_STATE_DSN": "postgresql://nobody@127.0.0.1:1/none",
    }
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "dagster_defs.to_api"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def test_daily_partitions_send_their_window(example_dbs: Databases) -> None:
    from pgferry.dagster import PgferryResource, pgferry_asset

    with ApiServer() as api:
        events = pgferry_asset(
            name="events_to_api",
            source_table="public.events",
            key_columns="id",
            incremental_column="occurred_at",
            partitions_def=dg.DailyPartitionsDefinition(start_date="2024-01-01"),
            target_url=api.url,
        )
        resources = {
            "pgferry": PgferryResource(source_dsn=example_dbs.source, state_dsn=example_dbs.target)
        }
        for _ in range(2):  # the second materialisation of the day replays the same keys
            done = dg.materialize([events], resources=resources, partition_key="2024-01-02")
            assert done.success
    day = fetch(
        example_dbs.source,
        "SELECT id FROM events WHERE occurred_at >= '2024-01-02' AND occurred_at < '2024-01-03'",
    )
    assert sorted(api.rows) == sorted(r["id"] for r in day) and len(day) == 96
    assert api.duplicates == 0 and api.replays == api.accepted_requests
    ledger = "SELECT partition FROM pgferry.ledger WHERE job = 'events_to_api'"
    assert fetchval(example_dbs.target, ledger) == "2024-01-02"
