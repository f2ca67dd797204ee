"""Every DAG in ``dags/`` run with ``airflow dags test`` against the test PostgreSQL server.

Each DAG is checked on what Airflow recorded (task states, XCom, Asset events, OpenLineage
events) and on the target's exact contents; every DAG is run a second time to check that the
rerun leaves the target unchanged.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from airflow_harness import DAGS, TARGET_PASSWORD, AirflowEnv

from helpers import execute, fetch, fetchval

pytestmark = pytest.mark.slow

DAG_IDS = {
    "pgferry_full_copy",
    "pgferry_hourly_incremental",
    "pgferry_partitioned_copy",
    "pgferry_downstream",
    "pgferry_daily_snapshot",
    "pgferry_to_api",  # run by test_airflow_http.py
}


def rows(dsn: str, table: str, order: str = "id") -> list[tuple[Any, ...]]:
    return [tuple(r) for r in fetch(dsn, f"SELECT * FROM {table} ORDER BY {order}")]


def ti_states(env: AirflowEnv, dag_id: str, run_id: str) -> dict[tuple[str, int], tuple[str, int]]:
    found = env.query(
        "SELECT task_id, map_index, state, try_number FROM task_instance "
        "WHERE dag_id = ? AND run_id = ?",
        dag_id,
        run_id,
    )
    return {(t, m): (s, n) for t, m, s, n in found}


def test_every_example_dag_is_tested() -> None:
    files = {p.stem for p in DAGS.glob("*.py")} - {"example_transforms"}
    assert files == DAG_IDS


def test_dags_import_without_errors(airflow_env: AirflowEnv) -> None:
    # Parsing must not touch a database: the connections point at a closed port here.
    nowhere = "postgres://nobody:pw@127.0.0.1:1/nowhere"
    env = {"AIRFLOW_CONN_PG_SOURCE": nowhere, "AIRFLOW_CONN_PG_TARGET": nowhere}
    errors = airflow_env.airflow(
        "dags", "list-import-errors", "--local", "--output", "json", env=env
    )
    assert json.loads(errors.strip().splitlines()[-1]) == []
    listed = airflow_env.airflow("dags", "list", "--local", "--output", "json", env=env)
    dag_ids = {d["dag_id"] for d in json.loads(listed.strip().splitlines()[-1])}
    assert dag_ids == DAG_IDS


def test_provider_is_listed(airflow_env: AirflowEnv) -> None:
    listed = airflow_env.airflow("providers", "list", "--output", "json")
    providers = {p["package_name"]: p for p in json.loads(listed.strip().splitlines()[-1])}
    assert providers["pgferry"]["version"] == "0.1.0"


# --- (a) full copy with a row transform, and (d) the downstream DAG ---------------------------


def clean(row: tuple[Any, ...]) -> tuple[Any, ...]:
    id_, name, email, country, signed_up_at = row
    first, _, last = name.strip().partition(" ")
    return (id_, first, last, email.strip().lower(), country, signed_up_at)


@pytest.fixture(scope="module")
def full_copy(airflow_env: AirflowEnv) -> dict[str, Any]:
    env = airflow_env
    first_run, first_output = env.dags_test("pgferry_full_copy", "2024-01-02")
    first = {
        "run_id": first_run,
        "output": first_output,
        "states": ti_states(env, "pgferry_full_copy", first_run),
        "xcom": env.xcom("pgferry_full_copy", first_run, "copy_customers"),
        "rows": rows(env.target, "customers_clean"),
        "queued": env.query("SELECT target_dag_id FROM asset_dag_run_queue"),
    }
    # A second run (of the same logical date: what clearing the task does).
    second_run, _ = env.dags_test("pgferry_full_copy", "2024-01-02")
    second = {
        "run_id": second_run,
        "xcom": env.xcom("pgferry_full_copy", second_run, "copy_customers"),
        "rows": rows(env.target, "customers_clean"),
    }
    return {"first": first, "second": second}


def test_full_copy_target_contents(airflow_env: AirflowEnv, full_copy: dict[str, Any]) -> None:
    expected = [clean(r) for r in rows(airflow_env.source, "customers")]
    assert len(expected) == 2000
    assert full_copy["first"]["rows"] == expected
    assert full_copy["first"]["states"] == {("copy_customers", -1): ("success", 1)}


def test_full_copy_xcom_is_the_run_result(full_copy: dict[str, Any]) -> None:
    result = full_copy["first"]["xcom"]
    assert result["job"] == "pgferry_full_copy.copy_customers"
    assert result["status"] == "success"
    assert result["mode"] == "replace"
    assert result["path"] == "rows"
    assert (result["rows_read"], result["rows_written"], result["rows_rejected"]) == (2000, 2000, 0)
    assert result["batches"] == 4
    assert result["bytes_written"] > 0
    # The process pool started inside Airflow's task runner.
    assert result["workers"] == 2
    assert set(result["stages"]) == {"extract", "transform", "load"}
    assert "pool of 2 processes" in full_copy["first"]["output"]


def test_full_copy_rerun_leaves_target_unchanged(full_copy: dict[str, Any]) -> None:
    assert full_copy["second"]["rows"] == full_copy["first"]["rows"]
    assert full_copy["second"]["xcom"]["status"] == "success"
    assert full_copy["second"]["xcom"]["run_id"] != full_copy["first"]["xcom"]["run_id"]


def test_full_copy_asset_event(airflow_env: AirflowEnv, full_copy: dict[str, Any]) -> None:
    env = airflow_env
    events = env.asset_events(env.table_uri(env.target_db, "public.customers_clean"))
    assert len(events) == 2
    first = events[0]
    assert (first["dag_id"], first["task_id"], first["run_id"]) == (
        "pgferry_full_copy",
        "copy_customers",
        full_copy["first"]["run_id"],
    )
    assert first["extra"] == {
        "job": "pgferry_full_copy.copy_customers",
        "run_id": full_copy["first"]["xcom"]["run_id"],
        "status": "success",
        "partition": "",
        "mode": "replace",
        "rows_written": 2000,
        "watermark_after": None,
        "source": env.table_uri(env.source_db, "public.customers"),
    }
    # Both tables were known when the DAG was parsed (the connections are AIRFLOW_CONN_*
    # variables): the asset graph shows source -> task -> target before any run.
    references = {
        kind: env.query(
            f"SELECT a.uri FROM task_{kind}_asset_reference r JOIN asset a ON a.id = r.asset_id "
            "WHERE r.dag_id = ? AND r.task_id = ?",
            "pgferry_full_copy",
            "copy_customers",
        )
        for kind in ("inlet", "outlet")
    }
    assert references == {
        "inlet": [(env.table_uri(env.source_db, "public.customers"),)],
        "outlet": [(env.table_uri(env.target_db, "public.customers_clean"),)],
    }
    # The DAG scheduled on the target Asset was queued by the event.
    assert ("pgferry_downstream",) in full_copy["first"]["queued"]


def test_full_copy_openlineage_events(airflow_env: AirflowEnv, full_copy: dict[str, Any]) -> None:
    env = airflow_env
    complete = [
        e
        for e in env.lineage_events()
        if e["eventType"] == "COMPLETE" and e["job"]["name"] == "pgferry_full_copy.copy_customers"
    ]
    assert len(complete) == 2
    event = complete[0]
    namespace = f"postgres://{env.host}:{env.port}"
    (source,) = event["inputs"]
    assert (source["namespace"], source["name"]) == (namespace, f"{env.source_db}.public.customers")
    assert [f["name"] for f in source["facets"]["schema"]["fields"]] == [
        "id",
        "name",
        "email",
        "country",
        "signed_up_at",
    ]
    (target,) = event["outputs"]
    assert (target["namespace"], target["name"]) == (
        namespace,
        f"{env.target_db}.public.customers_clean",
    )
    schema = {f["name"]: f["type"] for f in target["facets"]["schema"]["fields"]}
    assert schema == {
        "id": "integer",
        "first_name": "text",
        "last_name": "text",
        "email": "text",
        "country": "text",
        "signed_up_at": "timestamp with time zone",
    }
    lineage = {
        column: [(f["name"], f["field"]) for f in spec["inputFields"]]
        for column, spec in target["facets"]["columnLineage"]["fields"].items()
    }
    src = f"{env.source_db}.public.customers"
    assert lineage == {
        # Pass-through columns map 1:1; the transform declares what the new ones read.
        "id": [(src, "id")],
        "first_name": [(src, "name")],
        "last_name": [(src, "name")],
        "email": [(src, "email")],
        "country": [(src, "country")],
        "signed_up_at": [(src, "signed_up_at")],
    }
    stats = target["outputFacets"]["outputStatistics"]
    assert stats["rowCount"] == 2000
    assert stats["size"] == full_copy["first"]["xcom"]["bytes_written"]
    # START already names both datasets (from the job alone: no database is read then).
    start = [
        e
        for e in env.lineage_events()
        if e["eventType"] == "START" and e["job"]["name"] == "pgferry_full_copy.copy_customers"
    ]
    assert len(start) == 2
    assert [(d["namespace"], d["name"]) for d in start[0]["inputs"]] == [
        (namespace, f"{env.source_db}.public.customers")
    ]
    assert [(d["namespace"], d["name"]) for d in start[0]["outputs"]] == [
        (namespace, f"{env.target_db}.public.customers_clean")
    ]


def test_downstream_dag_reads_the_target_asset_event(
    airflow_env: AirflowEnv, full_copy: dict[str, Any]
) -> None:
    env = airflow_env
    run_id, _ = env.dags_test("pgferry_downstream", "2024-01-02")
    assert ti_states(env, "pgferry_downstream", run_id) == {("report", -1): ("success", 1)}
    assert env.xcom("pgferry_downstream", run_id, "report") == {
        "rows_written": 2000,
        "pgferry_run_id": full_copy["second"]["xcom"]["run_id"],
        "rows_in_table": 2000,
    }


# --- (b) hourly incremental upsert, with a transient failure on the first try ----------------

FAULT_ONCE = """
CREATE TABLE orders_mirror (id bigint PRIMARY KEY, customer_id int NOT NULL,
                            amount numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL,
                            amount_gross numeric);
-- The fault fires once (a sequence is not rolled back): when the target reaches 1000 rows, the
-- statement fails with a serialization failure, a transient error.
CREATE SEQUENCE fault_once;
CREATE FUNCTION fault_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (SELECT count(*) FROM orders_mirror) >= 1000 THEN
    IF nextval('fault_once') = 1 THEN
      RAISE EXCEPTION 'injected fault' USING ERRCODE = '40001';
    END IF;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER fault_once AFTER INSERT ON orders_mirror
  FOR EACH STATEMENT EXECUTE FUNCTION fault_once();
"""


def mirrored(source: str) -> list[tuple[Any, ...]]:
    return [(*r, (r[2] * Decimal("1.2")).quantize(Decimal("0.01"))) for r in rows(source, "orders")]


def test_hourly_incremental_retries_resume_without_duplicates(airflow_env: AirflowEnv) -> None:
    env = airflow_env
    dag = "pgferry_hourly_incremental"
    job = f"{dag}.upsert_orders"
    execute(env.target, FAULT_ONCE)

    # First hour: try 1 commits four batches of 200, then fails on a transient error; Airflow
    # retries, and try 2 continues after the committed position.
    run_id, output = env.dags_test(dag, "2024-01-02T10:00:00+00:00")
    assert ti_states(env, dag, run_id) == {("upsert_orders", -1): ("success", 2)}
    assert "failed with a transient error" in output
    ((rendered,),) = env.query(
        "SELECT rendered_fields FROM rendered_task_instance_fields WHERE dag_id = ? AND run_id = ?",
        dag,
        run_id,
    )
    # The data interval's end is a bound parameter of the source query.
    assert json.loads(rendered)["source_params"] == ["2024-01-02 10:00:00+00:00"]
    assert rows(env.target, "orders_mirror") == mirrored(env.source)
    assert fetchval(env.target, "SELECT count(DISTINCT id) = count(*) FROM orders_mirror")
    result = env.xcom(dag, run_id, "upsert_orders")
    assert (result["rows_read"], result["rows_written"]) == (2200, 2200)
    assert result["watermark_after"] == "2024-01-01 00:07:08+00:00"
    runs = fetch(
        env.target,
        "SELECT status, rows_written FROM pgferry.runs WHERE job = $1 ORDER BY started_at",
        job,
    )
    assert [tuple(r) for r in runs] == [("failed", 800), ("success", 2200)]
    # Lineage through the source query (to the table it reads) and the transform's declaration.
    (event,) = [
        e for e in env.lineage_events() if e["eventType"] == "COMPLETE" and e["job"]["name"] == job
    ]
    orders = f"{env.source_db}.public.orders"
    assert [i["name"] for i in event["inputs"]] == [orders]
    (output,) = event["outputs"]
    lineage = {
        column: [(f["name"], f["field"]) for f in spec["inputFields"]]
        for column, spec in output["facets"]["columnLineage"]["fields"].items()
    }
    assert lineage == {
        "id": [(orders, "id")],
        "customer_id": [(orders, "customer_id")],
        "amount": [(orders, "amount")],
        "updated_at": [(orders, "updated_at")],
        "amount_gross": [(orders, "amount")],
    }
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == 2200

    # Next hour: only the rows that changed since.
    execute(
        env.source,
        "UPDATE orders SET amount = amount + 1, updated_at = '2024-01-02 10:30+00' "
        "WHERE id % 500 = 0; "
        "INSERT INTO orders "
        "SELECT g, 1, g, '2024-01-02 10:45+00' FROM generate_series(3001, 3004) g",
    )
    run_id, _ = env.dags_test(dag, "2024-01-02T11:00:00+00:00")
    result = env.xcom(dag, run_id, "upsert_orders")
    assert (result["rows_read"], result["rows_written"]) == (10, 10)
    assert result["watermark_before"] == "2024-01-01 00:07:08+00:00"
    expected = mirrored(env.source)
    assert rows(env.target, "orders_mirror") == expected

    # Running that hour again (clearing the task) changes nothing.
    run_id, _ = env.dags_test(dag, "2024-01-02T11:00:00+00:00")
    result = env.xcom(dag, run_id, "upsert_orders")
    assert (result["rows_read"], result["rows_written"]) == (0, 0)
    assert rows(env.target, "orders_mirror") == expected


# --- (e) a daily snapshot: a full append made safe to clear by its run key ---------------------


def test_daily_snapshot_cleared_and_rerun_appends_once(airflow_env: AirflowEnv) -> None:
    env = airflow_env
    dag, task = "pgferry_daily_snapshot", "snapshot_customers"
    snapshot = "SELECT snapshot_date::text, count(*) FROM customers_history GROUP BY 1 ORDER BY 1"
    uri = env.table_uri(env.target_db, "public.customers_history")

    run_id, _ = env.dags_test(dag, "2024-01-02")
    first = env.xcom(dag, run_id, task)
    assert (first["status"], first["rows_written"]) == ("success", 2000)
    assert first["run_key"] == f"{dag}/{run_id}/{task}/-1"
    ((rendered,),) = env.query(
        "SELECT rendered_fields FROM rendered_task_instance_fields WHERE dag_id = ? AND run_id = ?",
        dag,
        run_id,
    )
    assert json.loads(rendered)["run_key"] == first["run_key"]
    assert [tuple(r) for r in fetch(env.target, snapshot)] == [("2024-01-02", 2000)]

    # The same task instance of the same DAG run again (what clearing it and running it does):
    # skipped, nothing appended.
    output = env.airflow("tasks", "test", dag, task, run_id)
    again = env.xcom(dag, run_id, task)
    assert (again["status"], again["rows_written"]) == ("skipped", 0)
    assert again["committed_by"] == first["run_id"]
    assert "already committed its rows" in output
    assert [tuple(r) for r in fetch(env.target, snapshot)] == [("2024-01-02", 2000)]
    # Airflow records an event for a declared outlet on every success; its extra says that
    # this one changed nothing.
    events = env.asset_events(uri)
    assert [e["extra"]["status"] for e in events] == ["success", "skipped"]
    assert events[1]["extra"]["rows_written"] == 0

    # The next day is another run key: its snapshot is appended.
    next_id, _ = env.dags_test(dag, "2024-01-03")
    assert env.xcom(dag, next_id, task)["status"] == "success"
    assert [tuple(r) for r in fetch(env.target, snapshot)] == [
        ("2024-01-02", 2000),
        ("2024-01-03", 2000),
    ]
    runs = fetch(
        env.target,
        "SELECT status, run_key, committed_at IS NOT NULL FROM pgferry.runs WHERE job = $1 "
        "ORDER BY started_at",
        f"{dag}.{task}",
    )
    assert [tuple(r) for r in runs] == [
        ("success", first["run_key"], True),
        ("skipped", first["run_key"], False),
        ("success", f"{dag}/{next_id}/{task}/-1", True),
    ]


# --- (c) partitioned copy with dynamic task mapping -------------------------------------------


def test_partitioned_copy_maps_one_task_per_range(airflow_env: AirflowEnv) -> None:
    env = airflow_env
    dag = "pgferry_partitioned_copy"
    uri = env.table_uri(env.target_db, "public.events_copy")
    expected = rows(env.source, "events")

    run_id, _ = env.dags_test(dag, "2024-01-02")
    states = ti_states(env, dag, run_id)
    assert states == {
        ("plan_ranges", -1): ("success", 1),
        **{("copy_range", i): ("success", 1) for i in range(4)},
    }
    assert rows(env.target, "events_copy") == expected
    results = [env.xcom(dag, run_id, "copy_range", i) for i in range(4)]
    assert [r["partition"] for r in results] == [
        "id[..1251)",
        "id[1251..2501)",
        "id[2501..3751)",
        "id[3751..)",
    ]
    assert sum(r["rows_written"] for r in results) == 5000
    ledger = fetch(
        env.target,
        "SELECT partition FROM pgferry.ledger WHERE job = $1 ORDER BY partition",
        f"{dag}.copy_range",
    )
    assert len(ledger) == 4
    events = env.asset_events(uri)
    assert sorted(e["map_index"] for e in events) == [0, 1, 2, 3]
    assert sorted(e["extra"]["partition"] for e in events) == sorted(
        r["partition"] for r in results
    )
    rendered = env.query(
        "SELECT map_index, rendered_map_index FROM task_instance "
        "WHERE dag_id = ? AND run_id = ? AND task_id = 'copy_range' ORDER BY map_index",
        dag,
        run_id,
    )
    assert [r[1] for r in rendered] == [r["partition"] for r in results]

    # A second run reloads each range in place: no duplicates.
    run_id, _ = env.dags_test(dag, "2024-01-02")
    assert set(ti_states(env, dag, run_id).values()) == {("success", 1)}
    assert rows(env.target, "events_copy") == expected


# --- Secrets ----------------------------------------------------------------------------------


def test_password_never_recorded(airflow_env: AirflowEnv) -> None:
    """Runs last: the password of pg_target appears in no output and no recorded data."""
    env = airflow_env
    assert env.outputs, "no airflow command ran"
    for output in env.outputs:
        assert TARGET_PASSWORD not in output
    assert TARGET_PASSWORD not in env.lineage_file.read_text()
    for table, column in [
        ("xcom", "value"),
        ("rendered_task_instance_fields", "rendered_fields"),
        ("asset_event", "extra"),
        ("log", "extra"),
    ]:
        found = env.query(
            f"SELECT count(*) FROM {table} WHERE {column} LIKE ?", f"%{TARGET_PASSWORD}%"
        )
        assert found == [(0,)], f"the password is in {table}.{column}"
