"""Every asset of ``dagster_defs/`` materialised in-process against the embedded PostgreSQL,
with its exact target contents, its metadata and its checks; and the definitions validated
by the ``dagster`` CLI."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import urllib.parse
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster_defs import definitions as ex
from dagster_support import ROOT, check_results, materialization

import pgferry
from helpers import Databases, execute, fetch

UTC = dt.UTC

# Every example is materialised for real, in dagster's own processes: minutes, not seconds.
pytestmark = pytest.mark.slow


def rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in fetch(dsn, query)]


def db_name(dsn: str) -> str:
    return urllib.parse.urlsplit(dsn).path.lstrip("/")


def run(*assets: Any, partition_key: str | None = None) -> dg.ExecuteInProcessResult:
    """Materialise pgferry assets with their checks and source specs, as the defs wire them."""
    checks = [c for a in assets if a in ex.pgferry_assets for c in ex.pgferry_checks(a)]
    sources = ex.pgferry_source_specs(*[a for a in assets if a in ex.pgferry_assets])
    return dg.materialize(
        [*assets, *checks, *sources], resources=ex.resources, partition_key=partition_key
    )


def assert_checks_pass(result: dg.ExecuteInProcessResult, **expected_meta: Any) -> None:
    checks = check_results(result)
    assert set(checks) == {"pgferry_row_count", "pgferry_no_rejects"}
    assert all(c.passed for c in checks.values()), checks
    meta = {k: v.value for k, v in checks["pgferry_row_count"].metadata.items()}
    assert meta == {"pgferry/difference": 0, **expected_meta}


# --- (a) a full copy with a transform ---------------------------------------------------------


def test_customers_full_copy_with_transform(example_dbs: Databases) -> None:
    result = run(ex.customers)
    assert result.success

    source = rows(
        example_dbs.source, "SELECT id, name, email, signed_up_at FROM customers ORDER BY id"
    )
    expected = [
        (i, name.strip(), email.lower(), at, email.lower().rpartition("@")[2])
        for i, name, email, at in source
    ]
    query = "SELECT id, name, email, signed_up_at, email_domain FROM public.customers ORDER BY id"
    assert rows(example_dbs.target, query) == expected
    assert {e[4] for e in expected} == {"example.com", "example.org"}

    meta = materialization(result)
    assert meta["dagster/row_count"] == 40
    assert meta["dagster/table_name"] == f"{db_name(example_dbs.target)}.public.customers"
    assert [(c.name, c.type) for c in meta["dagster/column_schema"].columns] == [
        ("id", "integer"),
        ("name", "text"),
        ("email", "text"),
        ("signed_up_at", "timestamp with time zone"),
        ("email_domain", "text"),
    ]
    source_key = dg.AssetKey(["source", "public", "customers_source"])
    assert meta["dagster/column_lineage"].deps_by_column == {
        c: [dg.TableColumnDep(asset_key=source_key, column_name=s)]
        for c, s in [
            ("id", "id"), ("name", "name"), ("email", "email"), ("signed_up_at", "signed_up_at"),
            ("email_domain", "email"),  # declared by the transform
        ]
    }  # fmt: skip
    assert {k: meta[f"pgferry/{k}"] for k in (
        "job", "status", "mode", "rows_read", "rows_written", "rows_rejected", "rows_deleted",
        "attempts", "watermark_before", "watermark_after",
    )} == {
        "job": "customers", "status": "success", "mode": "replace", "rows_read": 40,
        "rows_written": 40, "rows_rejected": 0, "rows_deleted": 0, "attempts": 1,
        "watermark_before": None, "watermark_after": None,
    }  # fmt: skip
    for stage in ("extract", "transform", "load"):
        assert meta[f"pgferry/{stage}_busy_s"] >= 0 and meta[f"pgferry/{stage}_wait_s"] >= 0
    assert meta["pgferry/duration_s"] > 0
    # The RunResult as stored by the engine: the metadata is that record, not a log parse.
    (run_row,) = fetch(example_dbs.target, "SELECT run_id::text, rows_written FROM pgferry.runs")
    assert (run_row[0], run_row[1]) == (meta["pgferry/run_id"], 40)
    assert_checks_pass(result, **{"pgferry/source_rows": 40, "pgferry/target_rows": 40})

    # Re-materialising (from the UI, say) replaces the table with the same rows.
    assert run(ex.customers).success
    assert rows(example_dbs.target, query) == expected


# --- (b) daily partitions with a schedule --------------------------------------------------


EVENTS = "SELECT id, occurred_at, kind, amount FROM {} ORDER BY id"


def test_events_daily_partitions_and_idempotent_reload(example_dbs: Databases) -> None:
    src, tgt = example_dbs.source, example_dbs.target
    for n, day in enumerate(("2024-01-01", "2024-01-02", "2024-01-03"), 1):
        result = run(ex.events, partition_key=day)
        assert result.success
        meta = materialization(result)
        # Dagster's meaning: the day's rows, and the whole table's.
        assert (meta["dagster/partition_row_count"], meta["dagster/row_count"]) == (96, 96 * n)
        assert meta["pgferry/partition"] == day
        assert (meta["pgferry/rows_read"], meta["pgferry/rows_written"]) == (96, 96)
        assert meta["dagster/table_name"] == f"{db_name(tgt)}.public.events"
        assert_checks_pass(result, **{"pgferry/source_rows": 96, "pgferry/target_rows": 96})
    loaded = rows(tgt, EVENTS.format("public.events"))
    assert loaded == rows(src, EVENTS.format("public.events"))
    assert len(loaded) == 288

    # Re-materialising a partition changes nothing.
    assert run(ex.events, partition_key="2024-01-02").success
    assert rows(tgt, EVENTS.format("public.events")) == loaded

    # After the source changes within the day, the partition's reload mirrors it exactly,
    # and the other days are untouched.
    execute(
        src, "UPDATE events SET kind = 'refund' WHERE id = 100; DELETE FROM events WHERE id = 101"
    )
    result = run(ex.events, partition_key="2024-01-02")
    meta = materialization(result)
    assert (meta["dagster/partition_row_count"], meta["dagster/row_count"]) == (95, 287)
    assert meta["pgferry/rows_deleted"] == 96  # the day as it was loaded before
    assert rows(tgt, EVENTS.format("public.events")) == rows(src, EVENTS.format("public.events"))

    # A backfill of the range (one run per partition, as Dagster launches it) is idempotent.
    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        assert run(ex.events, partition_key=day).success
    assert rows(tgt, EVENTS.format("public.events")) == rows(src, EVENTS.format("public.events"))


def test_events_schedule_requests_the_day_that_ended() -> None:
    schedule = ex.defs.resolve_schedule_def("events_daily_schedule")
    assert schedule.cron_schedule == "0 1 * * *"
    assert schedule.job_name == "events_daily"
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2024, 1, 3, 1, 0, tzinfo=UTC)
    )
    requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert [r.partition_key for r in requests] == ["2024-01-02"]


# --- (c) key-range partitions ----------------------------------------------------------------


ORDERS = "SELECT id, customer_id, status, total, created_at FROM {} ORDER BY id"


def test_orders_ranges_are_what_plan_partitions_gives(example_dbs: Databases) -> None:
    job = pgferry.Job.from_dict({
        "source": {"dsn": example_dbs.source, "table": "public.orders", "key": "id"},
        "target": {"table": "public.orders"},
    })  # fmt: skip
    assert pgferry.plan_partitions(job, 4) == ex.ORDER_RANGES
    assert ex.orders.partitions_def is not None
    assert ex.orders.partitions_def.get_partition_keys() == [p.name for p in ex.ORDER_RANGES]


def test_orders_key_ranges_then_downstream(example_dbs: Databases) -> None:
    src, tgt = example_dbs.source, example_dbs.target
    for n, (part, (low, high)) in enumerate(
        zip(ex.ORDER_RANGES, [(1, 250), (251, 500), (501, 750), (751, 1000)], strict=True), 1
    ):
        result = run(ex.orders, partition_key=part.name)
        assert result.success
        meta = materialization(result)
        # The range's 250 rows; the table holds the ranges loaded so far.
        assert (meta["dagster/partition_row_count"], meta["dagster/row_count"]) == (250, 250 * n)
        assert meta["pgferry/partition"] == part.name
        assert_checks_pass(result, **{"pgferry/source_rows": 250, "pgferry/target_rows": 250})
        ids = rows(tgt, f"SELECT min(id), max(id) FROM public.orders WHERE id >= {low}")
        assert ids == [(low, high)]
    loaded = rows(tgt, ORDERS.format("public.orders"))
    assert loaded == rows(src, ORDERS.format("public.orders"))

    # Re-materialising a range changes nothing.
    assert run(ex.orders, partition_key=ex.ORDER_RANGES[1].name).success
    assert rows(tgt, ORDERS.format("public.orders")) == loaded

    # (d) The downstream asset reads the target.
    result = dg.materialize([ex.order_totals], resources=ex.resources)
    assert result.success
    expected = rows(src, "SELECT status, count(*), sum(total) FROM orders GROUP BY 1 ORDER BY 1")
    assert rows(tgt, "SELECT status, orders, total FROM marts.order_totals ORDER BY 1") == expected
    assert materialization(result) == {
        "dagster/row_count": 4,
        "dagster/table_name": "marts.order_totals",
        "orders": 1000,
    }
    assert sum(r[2] for r in expected) == Decimal("750750.00")


# --- The definitions as a whole ----------------------------------------------------------------


def test_definitions_hold_every_example() -> None:
    graph = ex.defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "customers", "events", "orders", "order_totals",
        "source/public/customers_source", "source/public/events_source",
        "source/public/orders_source",
    }  # fmt: skip
    # Source → target lineage in the graph.
    assert graph.get(dg.AssetKey("orders")).parent_keys == {
        dg.AssetKey(["source", "public", "orders_source"])
    }
    assert graph.get(dg.AssetKey("order_totals")).parent_keys == {dg.AssetKey("orders")}
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {"pgferry_row_count", "pgferry_no_rejects"}
    assert len(graph.asset_check_keys) == 6


@pytest.mark.timeout(180)
def test_dagster_definitions_validate(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "PGFERRY_SOURCE_DSN": "postgresql://nobody@127.0.0.1:1/none",
        "PGFERRY_TARGET_DSN": "postgresql://nobody@127.0.0.1:1/none",
    }
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "dagster_defs"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr
