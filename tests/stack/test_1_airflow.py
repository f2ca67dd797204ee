"""Airflow 3 on the CeleryExecutor with two workers, driven through its REST API as the UI does.

The tests run in file order and build on each other (one stack, one metadata database).
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path
from typing import Any

from stack_support import ARTIFACTS, Airflow, wait_for

from helpers import execute, fetch

PARTITIONED = "pgferry_partitioned_copy"
EVENTS = "SELECT id, kind, payload::text, at FROM public.{} ORDER BY id"
SHARED: dict[str, Any] = {}


def rows(dsn: str, table: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in fetch(dsn, EVENTS.format(table))]


def source(stack: dict[str, Any]) -> str:
    return str(stack["dsns"]["airflow_source"])


def target(stack: dict[str, Any]) -> str:
    return str(stack["dsns"]["warehouse"])


def metadata_db(stack: dict[str, Any]) -> str:
    return str(stack["dsns"]["airflow_metadata"])


def events_copy_uri(stack: dict[str, Any]) -> str:
    """The target's Asset URI: ``postgres://host:port/database/schema/table``."""
    authority = target(stack).split("@", 1)[1].split("/", 1)[0]
    return f"postgres://{authority}/warehouse/public/events_copy"


def worker_hosts() -> dict[str, str]:
    host = socket.getfqdn()
    return {f"{host}-worker1": "worker1", f"{host}-worker2": "worker2"}


def task_log(stack: dict[str, Any], dag_id: str, run_id: str, task_id: str,
             map_index: int = -1, attempt: int = 1) -> str:  # fmt: skip
    base = Path(stack["airflow_env"]["AIRFLOW_HOME"]) / "logs" / f"dag_id={dag_id}"
    path = base / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        path = path / f"map_index={map_index}"
    lines = []
    for line in (path / f"attempt={attempt}.log").read_text().splitlines():
        try:
            lines.append(f"{json.loads(line).get('level')} {json.loads(line).get('event', '')}")
        except ValueError:
            lines.append(line)
    return "\n".join(lines)


def test_partitioned_copy_runs_its_mapped_tasks_on_both_celery_workers(
    stack: dict[str, Any], airflow: Airflow
) -> None:
    airflow.unpause(PARTITIONED)
    run_id = airflow.trigger(PARTITIONED)
    assert airflow.wait_run(PARTITIONED, run_id) == "success"
    tis = airflow.task_instances(PARTITIONED, run_id)
    mapped = sorted((t for t in tis if t["task_id"] == "copy_range"), key=lambda t: t["map_index"])
    assert [(t["map_index"], t["state"], t["try_number"]) for t in mapped] == [
        (i, "success", 1) for i in range(4)
    ]
    # Each task instance records the worker that ran it (its hostname callable names it) and
    # the pid of its task process: the four ranges ran on both Celery workers.
    hosts = worker_hosts()
    ran_on = {hosts[t["hostname"]] for t in mapped}
    assert ran_on == {"worker1", "worker2"}, [(t["hostname"], t["pid"]) for t in mapped]
    assert len({t["pid"] for t in mapped}) == 4
    assert rows(target(stack), "events_copy") == rows(source(stack), "events")

    # The RunResults (XCom) and the Asset events are in the metadata database.
    xcoms = fetch(
        metadata_db(stack),
        "SELECT map_index, value FROM xcom WHERE dag_id = $1 AND run_id = $2 "
        "AND task_id = 'copy_range' AND key = 'return_value' ORDER BY map_index",
        PARTITIONED,
        run_id,
    )
    results = [json.loads(v) if isinstance(v, str) else v for _, v in xcoms]
    assert [r["status"] for r in results] == ["success"] * 4
    assert sum(r["rows_written"] for r in results) == 5000
    assert [r["partition"] for r in results] == [t["rendered_map_index"] for t in mapped]
    uri = events_copy_uri(stack)
    events = fetch(
        metadata_db(stack),
        "SELECT e.source_map_index, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE a.uri = $1 AND e.source_run_id = $2 ORDER BY e.source_map_index",
        uri,
        run_id,
    )
    assert [e[0] for e in events] == [0, 1, 2, 3]
    assert sorted(json.loads(e[1])["partition"] for e in events) == sorted(
        r["partition"] for r in results
    )
    # The race a real scheduler found: no mapped task failed creating the target's Asset, and
    # no unused alias sits in the asset graph.
    api_log = (Path(stack["state_dir"]) / "logs" / "airflow-api-server.log").read_text()
    assert "idx_asset_name_uri_unique" not in api_log
    assert "Error updating Task Instance state" not in api_log
    # (The HTTP example's endpoint comes from a connection resolved when the task runs, so
    # that DAG keeps its alias; the partitioned copy declares its Assets and needs none.)
    aliases = fetch(metadata_db(stack), "SELECT name FROM asset_alias WHERE name LIKE $1",
                    f"pgferry:{PARTITIONED}.%")  # fmt: skip
    assert aliases == []
    producers = fetch(
        metadata_db(stack),
        "SELECT r.dag_id, r.task_id FROM task_outlet_asset_reference r "
        "JOIN asset a ON a.id = r.asset_id WHERE a.uri = $1",
        uri,
    )
    assert [tuple(p) for p in producers] == [(PARTITIONED, "copy_range")]
    SHARED["run_id"] = run_id
    SHARED["mapped"] = mapped


def test_clearing_one_mapped_task_reruns_it_and_leaves_the_target_unchanged(
    stack: dict[str, Any], airflow: Airflow
) -> None:
    run_id = SHARED["run_id"]
    before = rows(target(stack), "events_copy")
    cleared = airflow.clear(PARTITIONED, run_id, "copy_range", 2)
    assert [(t["task_id"], t["map_index"]) for t in cleared] == [("copy_range", 2)]

    def rerun() -> dict[str, Any] | None:
        for t in airflow.task_instances(PARTITIONED, run_id):
            if (t["task_id"], t["map_index"]) == ("copy_range", 2) and t["try_number"] == 2:
                return t if t["state"] in ("success", "failed") else None
        return None

    ti = wait_for("the cleared task instance to run again", rerun, 180)
    assert ti["state"] == "success"
    assert airflow.wait_run(PARTITIONED, run_id) == "success"
    assert rows(target(stack), "events_copy") == before
    result = airflow.xcom(PARTITIONED, run_id, "copy_range", 2)
    # The range was deleted and reloaded in one transaction, and the XCom says so.
    assert (result["rows_written"], result["rows_deleted"]) == (1250, 1250)
    log = task_log(stack, PARTITIONED, run_id, "copy_range", 2, attempt=2)
    assert "deleted 1250 rows before reloading it" in log


def test_a_worker_killed_mid_task_is_retried_and_the_target_is_exact(
    stack: dict[str, Any], airflow: Airflow
) -> None:
    # Enough rows that a range takes a while: the kill lands inside a running task.
    execute(
        source(stack),
        "INSERT INTO events SELECT g, 'view', jsonb_build_object('n', g), "
        "timestamptz '2024-01-01' + g * interval '1 second' FROM generate_series(5001, 800000) g",
    )
    run_id = airflow.trigger(PARTITIONED)
    hosts = worker_hosts()

    def copying_on_worker1() -> dict[str, Any] | None:
        active = fetch(
            target(stack),
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgferry:%' "
            "AND state = 'active' AND query ILIKE 'COPY%'",
        )[0][0]
        if not active:
            return None
        for t in airflow.task_instances(PARTITIONED, run_id):
            running = t["task_id"] == "copy_range" and t["state"] == "running"
            if running and hosts.get(t["hostname"] or "") == "worker1":
                return t
        return None

    victim = wait_for("a range being copied on worker1", copying_on_worker1, 180, every=0.2)
    pids = json.loads((Path(stack["state_dir"]) / "stack.json").read_text())["pids"]
    os.killpg(pids["airflow-worker1"], signal.SIGKILL)  # the worker, its pool, its tasks
    assert airflow.wait_run(PARTITIONED, run_id, timeout=300) == "success"
    tis = {t["map_index"]: t for t in airflow.task_instances(PARTITIONED, run_id)
           if t["task_id"] == "copy_range"}  # fmt: skip
    assert tis[victim["map_index"]]["try_number"] >= 2, "the killed task was not retried"
    assert all(t["state"] == "success" for t in tis.values())
    assert rows(target(stack), "events_copy") == rows(source(stack), "events")
    SHARED["killed"] = {
        "map_index": victim["map_index"],
        "try": tis[victim["map_index"]]["try_number"],
    }


def test_runs_without_a_logical_date_and_the_transform_pool_inside_a_celery_worker(
    stack: dict[str, Any], airflow: Airflow
) -> None:
    """The UI's and the REST API's runs have ``"logical_date": null``: the examples' templates
    and the default run key render for them. ``pgferry_full_copy`` asks for a transform pool
    of two processes inside a Celery worker's task process."""
    dags = ["pgferry_full_copy", "pgferry_daily_snapshot", "pgferry_hourly_incremental"]
    runs = {}
    for dag_id in dags:
        runs[dag_id] = airflow.trigger(dag_id)  # before unpausing: no scheduled run first
        airflow.unpause(dag_id)
    for dag_id, run_id in runs.items():
        state = airflow.wait_run(dag_id, run_id, timeout=300)
        (ti,) = airflow.task_instances(dag_id, run_id)
        log = task_log(stack, dag_id, run_id, ti["task_id"], attempt=ti["try_number"])
        assert state == "success", log[-3000:]
        assert "is undefined" not in log
    snapshot = airflow.xcom("pgferry_daily_snapshot", runs["pgferry_daily_snapshot"],
                            "snapshot_customers")  # fmt: skip
    assert snapshot["rows_written"] == 2000
    assert snapshot["run_key"].endswith(f"/{runs['pgferry_daily_snapshot']}/snapshot_customers/-1")

    result = airflow.xcom("pgferry_full_copy", runs["pgferry_full_copy"], "copy_customers")
    log = task_log(stack, "pgferry_full_copy", runs["pgferry_full_copy"], "copy_customers")
    assert result["rows_written"] == 2000
    inline = [ln for ln in log.splitlines() if "running the transform inline" in ln]
    if result["workers"] == 2:  # really in parallel: the pool started, and no fallback
        assert "transform in a pool of 2 processes" in log and not inline
        mode = "pool of 2 processes"
    else:  # inline, with one clear warning saying why; never a crash or a hang
        assert result["workers"] == 0
        assert len(inline) == 1 and inline[0].startswith("warning"), inline
        assert "daemonic process" in inline[0]
        mode = inline[0]
    (ARTIFACTS / "transform_pool_in_celery.txt").write_text(mode + "\n")
