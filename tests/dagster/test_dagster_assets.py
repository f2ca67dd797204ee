"""The factory, resource, failures, retries, checks and instance storage of pgferry.dagster."""

from __future__ import annotations

import concurrent.futures
import shutil
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster_defs import definitions as ex
from dagster_support import ROOT, check_results, materialization

import pgferry
from helpers import Databases, dsn_with_database, execute, fetch, fetchval
from pgferry.dagster import (
    PgferryResource,
    PgferryTranslator,
    PgferryTranslatorData,
    pgferry_asset,
    pgferry_checks,
    pgferry_source_specs,
)
from pgferry.dagster.metadata import column_lineage

EVENTS = """
CREATE TABLE events (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, name text);
INSERT INTO events
SELECT g, timestamptz '2024-01-01 00:00+00' + (g / 10) * interval '1 minute', 'n' || g
FROM generate_series(1, 1000) g;
"""

QUICK_RETRY = dg.RetryPolicy(max_retries=2, delay=0.1)


def resource(dbs: Databases, **kw: Any) -> dict[str, PgferryResource]:
    return {"pgferry": PgferryResource(source_dsn=dbs.source, target_dsn=dbs.target, **kw)}


def ids(dsn: str, table: str) -> list[int]:
    return [r[0] for r in fetch(dsn, f"SELECT id FROM {table} ORDER BY id")]


def step_events(result: dg.ExecuteInProcessResult, kind: str) -> list[dg.DagsterEvent]:
    return [e for e in result.all_events if e.event_type_value == kind]


# --- Building assets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"source_table": "a", "target_table": "b"},
            "a full 'append' would add every source row again",
        ),
        (
            {"job": {"source": {"table": "a"}, "target": {"table": "b", "mode": "replace"}},
             "target_table": "c"},
            "give either job= or target_table, not both",
        ),
        ({"target_table": "b"}, "give job=, or target_table and one of source_table"),
        (
            {"source_query": "SELECT 1 AS id", "target_table": "b", "mode": "upsert"},
            "mode 'upsert' needs target.key",
        ),
        (
            {"source_table": "a", "target_table": "b", "mode": "upsert", "key_columns": "id",
             "partitions_def": dg.StaticPartitionsDefinition(["x"])},
            "partitions_def must be a time-window definition",
        ),
        (
            {"source_table": "a", "target_table": "b", "mode": "upsert", "key_columns": "id",
             "partitions_def": dg.DailyPartitionsDefinition("2024-01-01")},
            "time-window partitions need incremental_column",
        ),
        (
            {"source_table": "a", "target_table": "b", "mode": "replace",
             "incremental_column": "t",
             "partitions_def": dg.DailyPartitionsDefinition("2024-01-01")},
            "partition.replace and mode 'replace' do not combine",
        ),
        (
            {"source_table": "a", "target_table": "b", "key_columns": "id",
             "partitions": [pgferry.Partition(name="p", column="id", upper=5)],
             "partitions_def": dg.StaticPartitionsDefinition(["q"])},
            "partitions_def must be static with the names of partitions",
        ),
    ],
)  # fmt: skip
def test_factory_refuses_unsafe_or_incomplete_jobs(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(pgferry.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pgferry_asset(**kwargs)


def test_factory_takes_a_job_object_mapping_or_file(tmp_path: Path) -> None:
    data = {
        "name": "copy_orders",
        "source": {"table": "public.orders", "key": "id"},
        "target": {"table": "orders_copy", "mode": "upsert", "key": "id"},
        "batch_size": 500,
    }
    path = tmp_path / "job.yaml"
    path.write_text(
        "name: copy_orders\nsource: {table: public.orders, key: id}\n"
        "target: {table: orders_copy, mode: upsert, key: id}\nbatch_size: 500\n"
    )
    for i, job in enumerate([pgferry.Job.from_dict(data), data, path, str(path)]):
        asset = pgferry_asset(job=job, key=["job_forms", str(i)], options={"max_rejects": 3})
        info = pgferry.dagster.pgferry_asset_info(asset)
        assert info.job.name == "copy_orders"
        assert (info.job.batch_size, info.job.max_rejects) == (500, 3)
        # Knobs the job leaves unset stay unset, so the resource's defaults still apply.
        assert "workers" not in info.job.model_fields_set
        spec = asset.specs_by_key[dg.AssetKey(["job_forms", str(i)])]
        source = dg.AssetKey(["source", "public", "orders_source"])
        assert [d.asset_key for d in spec.deps] == [source]
        assert spec.metadata["pgferry/job"].value["target"]["mode"] == "upsert"


def test_translator_chooses_keys_and_source_specs_follow() -> None:
    class Erp(PgferryTranslator):
        def get_asset_spec(self, data: PgferryTranslatorData) -> dg.AssetSpec:
            spec = super().get_asset_spec(data)
            if data.side == "source":
                assert data.table is not None
                return spec.replace_attributes(key=["erp", data.table.name])
            return spec.replace_attributes(owners=["team:data"])

    asset = pgferry_asset(
        source_table="public.items", target_table="dwh.items", mode="replace", translator=Erp(),
        deps=["other"], group_name="g",
    )  # fmt: skip
    spec = asset.specs_by_key[dg.AssetKey(["dwh", "items"])]
    assert {d.asset_key for d in spec.deps} == {dg.AssetKey(["erp", "items"]), dg.AssetKey("other")}
    assert spec.owners == ["team:data"] and spec.group_name == "g"
    assert spec.kinds == {"postgres", "pgferry"}
    (source,) = pgferry_source_specs(asset, asset)
    assert source.key == dg.AssetKey(["erp", "items"])
    assert source.metadata["dagster/table_name"] == "public.items"


def test_default_source_and_target_are_labelled_apart() -> None:
    """Dagster's asset graph labels a node with the last part of its key: the source table's
    node must not read like its target's (both were "customers")."""
    for source, target in [("public.customers", "customers"), ("customers", "public.customers"),
                           ("customers", "customers_copy")]:  # fmt: skip
        asset = pgferry_asset(source_table=source, target_table=target, mode="replace")
        (spec,) = asset.specs
        (dep,) = spec.deps
        assert dep.asset_key.path[-1] == "customers_source"
        assert dep.asset_key.path[0] == "source"
        assert dep.asset_key.path[-1] != spec.key.path[-1]


def test_resource_fills_dsns_and_defaults() -> None:
    job = pgferry.Job.from_dict({
        "source": {"table": "a", "dsn": "postgresql://u:pw@h/s"},
        "target": {"table": "b"},
        "batch_size": 7,
    })  # fmt: skip
    res = PgferryResource(target_dsn="postgresql://u@h/t", batch_size=100, workers=0)
    resolved = res.resolve(job)
    assert resolved.source.dsn == "postgresql://u:pw@h/s"  # kept: the resource has none
    assert resolved.target.dsn == "postgresql://u@h/t"
    assert (resolved.batch_size, resolved.workers) == (7, 0)  # the job's own batch_size wins
    over = PgferryResource(source_dsn="postgresql://u@h/other", target_dsn="postgresql://u@h/t")
    assert over.resolve(job).source.dsn == "postgresql://u@h/other"
    with pytest.raises(pgferry.ConfigError, match="no target DSN: set target_dsn on the pgferry"):
        PgferryResource().resolve(job)


# --- Running -------------------------------------------------------------------------------


def test_upsert_incremental_asset_rematerialises_safely(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    asset = pgferry_asset(
        name="events_upsert", source_table="events", target_table="events_copy", mode="upsert",
        key_columns="id", incremental_column="updated_at", options={"batch_size": 100},
    )  # fmt: skip
    first = dg.materialize([asset], resources=resource(dbs, workers=0))
    meta = materialization(first)
    assert (meta["pgferry/rows_read"], meta["dagster/row_count"]) == (1000, 1000)
    assert meta["pgferry/watermark_before"] is None
    assert meta["pgferry/watermark_after"].startswith("2024-01-01 01:40:00")
    assert meta["pgferry/batches"] >= 1

    execute(dbs.source, "INSERT INTO events VALUES (1001, '2024-01-02 00:00+00', 'late')")
    again = materialization(dg.materialize([asset], resources=resource(dbs)))
    assert (again["pgferry/rows_read"], again["dagster/row_count"]) == (1, 1001)
    assert again["pgferry/watermark_before"] == meta["pgferry/watermark_after"]
    assert ids(dbs.target, "events_copy") == list(range(1, 1002))


def test_emptied_window_is_emptied_in_the_target(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    hourly = dg.HourlyPartitionsDefinition(start_date="2024-01-01-00:00")
    asset = pgferry_asset(
        name="events_hourly", source_table="events", target_table="events_copy",
        key_columns="id", incremental_column="updated_at", partitions_def=hourly,
    )  # fmt: skip
    res = resource(dbs)
    first = materialization(
        dg.materialize([asset], resources=res, partition_key="2024-01-01-01:00")
    )
    # ids 600 to 1000: the partition, and (the one partition loaded) the whole table.
    assert (first["dagster/partition_row_count"], first["dagster/row_count"]) == (401, 401)
    execute(dbs.source, "DELETE FROM events WHERE updated_at >= '2024-01-01 01:00+00'")
    meta = materialization(dg.materialize([asset], resources=res, partition_key="2024-01-01-01:00"))
    assert meta["pgferry/rows_read"] == 0
    assert fetchval(dbs.target, "SELECT count(*) FROM events_copy") == 0
    assert (meta["dagster/partition_row_count"], meta["dagster/row_count"]) == (0, 0)


def test_terminal_failure_is_not_retried(dbs: Databases) -> None:
    asset = pgferry_asset(
        name="missing", source_table="no_such_table", target_table="t", mode="replace",
        retry_policy=QUICK_RETRY,
    )  # fmt: skip
    result = dg.materialize([asset], resources=resource(dbs), raise_on_error=False)
    assert not result.success
    assert step_events(result, "STEP_UP_FOR_RETRY") == []
    (failure,) = result.get_step_failure_events()
    data = failure.step_failure_data.user_failure_data
    assert data is not None
    assert data.description.startswith("pgferry failed with an error that a retry would not fix")
    assert "source table no_such_table does not exist" in data.description
    meta = {k: v.value for k, v in data.metadata.items()}
    assert meta["pgferry/error_class"] == "SchemaError"
    assert meta["pgferry/retryable"] is False
    assert meta["pgferry/status"] == "failed"
    assert meta["pgferry/error_stage"] == "plan"


def test_transient_failure_is_retried_and_resumes_from_the_ledger(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    killed: list[int] = []

    def kill_once(row: Mapping[str, Any]) -> dict[str, Any]:
        # Halfway through the first attempt, every connection of the job to the target dies,
        # as in a failover: the load fails with a transient error.
        if row["id"] == 500 and not killed:
            killed.append(row["id"])
            execute(
                dbs.target,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'pgferry:flaky:%' AND pid <> pg_backend_pid()",
            )
        return dict(row)

    asset = pgferry_asset(
        name="flaky", source_table="events", target_table="events_copy", key_columns="id",
        incremental_column="updated_at", transform=kill_once, retry_policy=QUICK_RETRY,
        options={"batch_size": 50, "queue_depth": 1, "max_retries": 0, "workers": 0},
    )  # fmt: skip
    result = dg.materialize([asset], resources=resource(dbs))
    assert result.success and killed == [500]
    assert len(step_events(result, "STEP_UP_FOR_RETRY")) == 1
    meta = materialization(result)
    # The retry continued after the last committed batch: no row lost, none twice.
    assert meta["pgferry/watermark_before"] is not None
    assert 0 < meta["pgferry/rows_read"] < 1000
    assert ids(dbs.target, "events_copy") == list(range(1, 1001))
    runs = fetch(dbs.target, "SELECT status, rows_written FROM pgferry.runs ORDER BY started_at")
    assert [r[0] for r in runs] == ["failed", "success"]
    assert runs[0][1] + runs[1][1] == 1000


def test_checks_report_rejects_and_count_mismatch(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    asset = pgferry_asset(
        name="picky", source_table="events", target_table="events_copy", mode="replace",
        transform="ferry_transforms:fail_on_7", options={"max_rejects": 5, "workers": 0},
    )  # fmt: skip
    result = dg.materialize([asset, *pgferry_checks(asset)], resources=resource(dbs))
    assert result.success
    assert materialization(result)["pgferry/rows_rejected"] == 1
    checks = check_results(result)
    rejects = checks["pgferry_no_rejects"]
    assert not rejects.passed and rejects.severity == dg.AssetCheckSeverity.WARN
    meta = {k: v.value for k, v in rejects.metadata.items()}
    assert meta["pgferry/rows_rejected"] == 1
    assert meta["pgferry/rejects"] == [
        {"stage": "transform", "error_class": "ValueError", "column": None, "rows": 1}
    ]
    counts = checks["pgferry_row_count"]
    assert not counts.passed and counts.severity == dg.AssetCheckSeverity.ERROR
    assert {k: v.value for k, v in counts.metadata.items()} == {
        "pgferry/source_rows": 1000, "pgferry/target_rows": 999, "pgferry/difference": -1,
    }  # fmt: skip


@pytest.mark.slow
def test_no_dsn_or_password_reaches_metadata_or_logs(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    secret = "s3cret-pw"

    def with_password(dsn: str) -> str:
        parts = urllib.parse.urlsplit(dsn)
        return parts._replace(netloc=parts.netloc.replace("@", f":{secret}@", 1)).geturl()

    res = {"pgferry": PgferryResource(source_dsn=with_password(dbs.source),
                                      target_dsn=with_password(dbs.target))}  # fmt: skip
    asset = pgferry_asset(
        name="secretive", source_table="events", target_table="events_copy", mode="replace"
    )
    bad = pgferry_asset(
        name="unreachable", source_table="events", target_table="events_copy", mode="replace",
        options={"connect_timeout": 1}, retry_policy=dg.RetryPolicy(max_retries=0),
    )  # fmt: skip
    bad_res = {"pgferry": PgferryResource(
        source_dsn=f"postgresql://postgres:{secret}@127.0.0.1:1/x",
        target_dsn=f"postgresql://postgres:{secret}@127.0.0.1:1/x",
    )}  # fmt: skip
    with dg.instance_for_test() as instance:
        ok = dg.materialize([asset, *pgferry_checks(asset)], resources=res, instance=instance)
        failed = dg.materialize([bad], resources=bad_res, instance=instance, raise_on_error=False)
        assert ok.success and not failed.success
        texts = [
            f"{entry.user_message} {entry.dagster_event!r}"
            for run_id in (ok.run_id, failed.run_id)
            for entry in instance.all_logs(run_id)
        ]
    assert any("postgres:***@" in t for t in texts)
    assert not [t for t in texts if secret in t]


# --- Instance storage ------------------------------------------------------------------------


@pytest.fixture
def dagster_storage_db(pg_server_dsn: str) -> Iterator[str]:
    name = f"dagster_{uuid.uuid4().hex[:8]}"
    execute(pg_server_dsn, f'CREATE DATABASE "{name}"')
    try:
        yield dsn_with_database(pg_server_dsn, name)
    finally:
        execute(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
def test_run_on_dagster_postgres_storage(
    example_dbs: Databases, dagster_storage_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = urllib.parse.urlsplit(dagster_storage_db)
    for var, value in {
        "DAGSTER_PG_HOST": parts.hostname,
        "DAGSTER_PG_PORT": str(parts.port or 5432),
        "DAGSTER_PG_USER": urllib.parse.unquote(parts.username or "postgres"),
        "DAGSTER_PG_PASSWORD": urllib.parse.unquote(parts.password or ""),
        "DAGSTER_PG_DB": parts.path.lstrip("/"),
    }.items():
        monkeypatch.setenv(var, value or "")
    shutil.copy(ROOT / "dagster_defs" / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        storages = (instance.run_storage, instance.event_log_storage, instance.schedule_storage)
        assert [type(s).__name__ for s in storages] == [
            "PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage",
        ]  # fmt: skip
        result = dg.materialize(
            [ex.events, *pgferry_checks(ex.events)], resources=ex.resources,
            partition_key="2024-01-02", instance=instance,
        )  # fmt: skip
        assert result.success
        assert [r.run_id for r in instance.get_runs()] == [result.run_id]
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("events"), asset_partitions=["2024-01-02"]),
            limit=5,
        ).records
        assert record.asset_materialization is not None
        stored = record.asset_materialization.metadata
        assert stored["dagster/row_count"].value == 96
        assert stored["dagster/partition_row_count"].value == 96
        assert stored["pgferry/run_id"].value == materialization(result)["pgferry/run_id"]
    finally:
        instance.dispose()
    # What Dagster stored really sits in PostgreSQL.
    assert fetchval(dagster_storage_db, "SELECT count(*) FROM runs") == 1
    assert fetchval(dagster_storage_db, "SELECT count(*) FROM event_logs") > 0
    assert fetchval(dagster_storage_db, "SELECT to_regclass('jobs') IS NOT NULL")


def test_key_ranges_load_in_parallel(example_dbs: Databases) -> None:
    # As a backfill launches them: one run per key range, all at once.
    def load(name: str) -> dict[str, Any]:
        result = dg.materialize([ex.orders], resources=ex.resources, partition_key=name)
        return materialization(result)

    with concurrent.futures.ThreadPoolExecutor(len(ex.ORDER_RANGES)) as pool:
        metas = list(pool.map(load, [p.name for p in ex.ORDER_RANGES]))
    # Dagster's meaning: the partition's rows, and the whole table's rows when it was counted
    # (after the run's own commit, while others ran). The last count saw every range.
    assert [m["dagster/partition_row_count"] for m in metas] == [250, 250, 250, 250]
    counts = [m["dagster/row_count"] for m in metas]
    assert all(250 <= c <= 1000 for c in counts) and max(counts) == 1000
    assert [m["pgferry/partition"] for m in metas] == [p.name for p in ex.ORDER_RANGES]
    query = "SELECT id, customer_id, status, total, created_at FROM orders ORDER BY id"
    assert fetch(example_dbs.target, query) == fetch(example_dbs.source, query)


def test_column_lineage_rules() -> None:
    src = dg.AssetKey(["source", "t"])

    def deps(lineage: dg.TableColumnLineage) -> dict[str, list[str]]:
        return {k: [d.column_name for d in v] for k, v in lineage.deps_by_column.items()}

    plain = column_lineage(["id", "name", "extra"], ["id", "name"], src)
    assert deps(plain) == {"id": ["id"], "name": ["name"]}
    transformed = column_lineage(
        ["id", "first", "last", "n"], ["id", "name", "age"], src,
        transformed=True, declared={"first": ["name"], "last": ["name", "nope"]},
    )  # fmt: skip
    assert deps(transformed) == {
        "id": ["id"], "first": ["name"], "last": ["name"], "n": ["age", "id", "name"],
    }  # fmt: skip


def test_the_core_never_imports_dagster() -> None:
    code = "import sys, pgferry, pgferry.cli; assert not [m for m in sys.modules if 'dagster' in m]"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
