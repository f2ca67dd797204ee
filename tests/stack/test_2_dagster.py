"""Dagster's webserver and daemon over ``dagster_defs``, driven through GraphQL as the UI does."""

from __future__ import annotations

from typing import Any

import psycopg2
from stack_support import BACKFILL_STATUS, Dagster, metadata, wait_for

from helpers import fetch

SOURCE_KEY = "source/public/customers_source"


def warehouse(stack: dict[str, Any]) -> str:
    return str(stack["dsns"]["dagster_warehouse"])


def checks(node: dict[str, Any]) -> dict[str, str | None]:
    out = {}
    for check in node["assetChecksOrError"]["checks"]:
        execution = check["executionForLatestMaterialization"]
        out[check["name"]] = execution["status"] if execution else None
    return out


def test_materialisation_launched_through_graphql(stack: dict[str, Any], dagster: Dagster) -> None:
    run_id = dagster.launch(["customers"])
    assert dagster.wait_run(run_id) == "SUCCESS"
    node = dagster.latest_materialization(["customers"])
    (materialization,) = node["assetMaterializations"]
    assert materialization["runId"] == run_id
    meta = metadata(materialization)
    rows = fetch(warehouse(stack), "SELECT count(*) FROM public.customers")[0][0]
    assert meta["dagster/row_count"] == rows == meta["pgferry/rows_written"]
    assert ("email_domain", "text") in meta["dagster/column_schema"]
    lineage = meta["dagster/column_lineage"]
    assert lineage["email_domain"] == [(SOURCE_KEY, "email")]  # declared by the transform
    assert lineage["id"] == [(SOURCE_KEY, "id")]
    assert (meta["pgferry/status"], meta["pgferry/mode"]) == ("success", "replace")
    assert checks(node) == {"pgferry_row_count": "SUCCEEDED", "pgferry_no_rejects": "SUCCEEDED"}


def test_partition_backfill_launched_through_graphql(
    stack: dict[str, Any], dagster: Dagster
) -> None:
    days = ["2024-01-01", "2024-01-02", "2024-01-03"]
    backfill_id = dagster.backfill(["events"], days)

    def finished() -> dict[str, Any] | None:
        data = dagster.gql(BACKFILL_STATUS, id=backfill_id)["partitionBackfillOrError"]
        runs = data["runs"]
        done = {r["status"] for r in runs} <= {"SUCCESS", "FAILURE", "CANCELED"}
        return data if len(runs) == len(days) and done and data["status"] != "REQUESTED" else None

    data = wait_for("the backfill's runs", finished, 420, every=2)
    assert {r["status"] for r in data["runs"]} == {"SUCCESS"}
    partitions = sorted(
        t["value"] for r in data["runs"] for t in r["tags"] if t["key"] == "dagster/partition"
    )
    assert partitions == days
    node = dagster.latest_materialization(["events"], "2024-01-02")
    (materialization,) = node["assetMaterializations"]
    meta = metadata(materialization)
    # Dagster's meaning: the day's rows, and the whole table's (all three days loaded by then,
    # unless this day finished before the others).
    assert meta["dagster/partition_row_count"] == 96
    assert 96 <= meta["dagster/row_count"] <= 288
    assert fetch(warehouse(stack), "SELECT count(*) FROM public.events")[0][0] == 288


def test_reexecute_from_failure_after_a_transient_failure(
    stack: dict[str, Any], dagster: Dagster
) -> None:
    """The target's database keeps dropping pgferry's connection (a failover that lasts), past
    pgferry's own retries and the asset's one step retry: the run fails. Once the database is
    back, "Re-execute from failure" completes it."""
    holder = psycopg2.connect(warehouse(stack))
    kills = 0
    try:
        with holder.cursor() as cur:  # the replace's swap waits for this lock...
            cur.execute("BEGIN; LOCK TABLE public.customers IN ACCESS SHARE MODE")
        run_id = dagster.launch(["customers"])

        def failed() -> str | None:
            nonlocal kills
            # ...and its connection is dropped while it waits: a transient error.
            killed = fetch(
                warehouse(stack),
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'pgferry:%' "
                "AND wait_event_type = 'Lock'",
            )[0][0]
            kills += int(killed)
            status = dagster.run_status(run_id)
            return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

        assert wait_for("the run to fail", failed, 300, every=0.2) == "FAILURE"
    finally:
        holder.rollback()
        holder.close()
    assert kills >= 2  # one per attempt at least: the first try and the step's retry
    events = dagster.step_events(run_id)
    assert "ExecutionStepUpForRetryEvent" in events  # the asset's RetryPolicy retried once
    assert "ExecutionStepFailureEvent" in events
    child = dagster.reexecute_from_failure(run_id)
    assert dagster.wait_run(child) == "SUCCESS"
    (materialization,) = dagster.latest_materialization(["customers"])["assetMaterializations"]
    assert materialization["runId"] == child
    assert metadata(materialization)["pgferry/status"] == "success"
