"""The hook, the operator, lineage and provider metadata, without a database or a DAG run."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG, Asset, AssetAlias, Connection
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.sdk.execution_time.context import OutletEventAccessors

import pgferry
from pgferry.airflow import PgferryHook, PgferryOperator, get_provider_info, table_asset
from pgferry.airflow import lineage as lin
from pgferry.airflow import operators as ops
from pgferry.airflow._task import run_key_of
from pgferry.airflow.hooks import dsn_from_connection
from pgferry.errors import LoadError, TransientLoadError
from pgferry.schema import Column

CONNECTIONS = {
    "src": "postgres://reader:p%40ss%2Fw%3Ard@db.example:6543/shop?sslmode=require&cursor=dict",
    "dwh": "postgres://loader:secret@dwh.example/warehouse",
}


def connection(conn_id: str) -> Connection:
    return Connection.from_uri(CONNECTIONS[conn_id], conn_id=conn_id)


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Connections served from CONNECTIONS; returns the ids looked up, in order."""
    looked_up: list[str] = []

    def get_connection(cls: Any, conn_id: str) -> Connection:
        looked_up.append(conn_id)
        return connection(conn_id)

    monkeypatch.setattr(PgferryHook, "get_connection", classmethod(get_connection))
    return looked_up


def make_dag() -> DAG:
    return DAG("d", schedule=None, start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))


# --- Provider ---------------------------------------------------------------------------------


def test_import_pgferry_does_not_import_airflow() -> None:
    code = "import sys, pgferry; print([m for m in sys.modules if m.split('.')[0] == 'airflow'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_provider_info_matches_airflow_schema() -> None:
    import jsonschema
    from airflow import __file__ as airflow_init

    schema = json.loads((Path(airflow_init).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "pgferry"
    assert info["versions"] == [pgferry.__version__]
    assert info["hooks"][0]["python-modules"] == ["pgferry.airflow.hooks"]
    assert info["operators"][0]["python-modules"] == ["pgferry.airflow.operators"]


def test_provider_entry_point_is_registered() -> None:
    points = importlib.metadata.entry_points(group="apache_airflow_provider")
    (point,) = [p for p in points if p.dist is not None and p.dist.name == "pgferry"]
    assert point.load() is get_provider_info


# --- Hook -------------------------------------------------------------------------------------


def test_dsn_from_a_postgres_connection() -> None:
    dsn = dsn_from_connection(connection("src"))
    # Credentials stay URL-quoted; libpq extras are kept, other hooks' extras are not.
    assert dsn == "postgresql://reader:p%40ss%2Fw%3Ard@db.example:6543/shop?sslmode=require"
    assert dsn_from_connection(connection("dwh"), database="other").endswith("@dwh.example/other")


def test_dsn_options_become_server_settings() -> None:
    conn = Connection(
        conn_id="x",
        conn_type="postgres",
        host="h",
        schema="db",
        extra=json.dumps({"options": "-c search_path=s1,public -cstatement_timeout=5000"}),
    )
    assert dsn_from_connection(conn) == (
        "postgresql://h/db?search_path=s1%2Cpublic&statement_timeout=5000"
    )


def test_dsn_unix_socket_and_ipv6() -> None:
    sock = Connection(conn_id="x", conn_type="postgres", host="/run/pg", port=5433, schema="db")
    assert dsn_from_connection(sock) == "postgresql:///db?host=%2Frun%2Fpg&port=5433"
    ipv6 = Connection(conn_id="x", conn_type="postgres", host="::1", port=5432, schema="db")
    assert dsn_from_connection(ipv6) == "postgresql://[::1]:5432/db"


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        (Connection(conn_id="x", conn_type="mysql", host="h", schema="d"), "of type 'mysql'"),
        (Connection(conn_id="x", conn_type="postgres", host="h"), "names no database"),
        (Connection(conn_id="x", conn_type="postgres", schema="d"), "names no host"),
        (
            Connection(conn_id="x", conn_type="postgres", host="h", schema="d", extra='{"iam": 1}'),
            "IAM",
        ),
        (
            Connection(
                conn_id="x", conn_type="postgres", host="h", schema="d", extra='{"options": "-x"}'
            ),
            "not a '-c name=value'",
        ),
    ],
)
def test_dsn_refuses_what_pgferry_cannot_use(conn: Connection, message: str) -> None:
    with pytest.raises(pgferry.ConfigError, match=message):
        dsn_from_connection(conn)


def test_hook_masks_the_password_and_names_assets(connections: list[str]) -> None:
    hook = PgferryHook("dwh")
    assert hook.masked_dsn == "postgresql://loader:***@dwh.example/warehouse"
    assert "secret" not in repr(hook.__dict__.get("masked_dsn", ""))
    assert hook.table_uri("sales.Orders") == "postgres://dwh.example:5432/warehouse/sales/orders"
    assert hook.table_uri('"Odd Name"') == "postgres://dwh.example:5432/warehouse/public/Odd%20Name"
    assert hook.table_asset("t") == Asset(uri="postgres://dwh.example:5432/warehouse/public/t")
    assert hook.openlineage_namespace == "postgres://dwh.example:5432"
    assert hook.openlineage_name("t") == "warehouse.public.t"
    assert connections == ["dwh"]  # fetched once


def test_table_asset_from_a_connection_uri() -> None:
    asset = table_asset(CONNECTIONS["dwh"], "public.customers")
    assert asset.uri == "postgres://dwh.example:5432/warehouse/public/customers"


# --- Operator: construction and templating ----------------------------------------------------


def test_operator_init_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("I/O in __init__")

    monkeypatch.setattr(PgferryHook, "get_connection", classmethod(forbidden))
    monkeypatch.setattr(ops.pgferry, "load_job", forbidden)
    with make_dag():
        op = PgferryOperator(
            task_id="t", source_conn_id="src", target_conn_id="dwh", job="/nowhere/job.yaml"
        )
    assert op.outlets == [AssetAlias(name="pgferry:d.t")]


def test_operator_template_fields() -> None:
    assert set(PgferryOperator.template_fields) == {
        "job",
        "source_table",
        "source_query",
        "source_params",
        "target_table",
        "partition",
        "overrides",
        "run_key",
        "endpoint",  # of an HTTP target
    }


def test_assets_known_at_parse_time_come_from_environment_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a connection fetched at parse time")

    monkeypatch.setattr(PgferryHook, "get_connection", classmethod(forbidden))
    monkeypatch.setenv("AIRFLOW_CONN_SRC", "postgres://u:pw@db.example:6543/shop")
    monkeypatch.setenv(
        "AIRFLOW_CONN_DWH",
        json.dumps({"conn_type": "postgres", "host": "dwh.example", "schema": "warehouse"}),
    )
    source = Asset(uri="postgres://db.example:6543/shop/public/orders")
    target = Asset(uri="postgres://dwh.example:5432/warehouse/mart/orders_copy")
    alias = AssetAlias(name="pgferry:d.t")
    common = {"task_id": "t", "source_conn_id": "src", "target_conn_id": "dwh"}
    with make_dag():
        op = PgferryOperator(source_table="orders", target_table="mart.orders_copy", **common)
    assert op.inlets == [source]
    # The declared target, and no alias that nothing would resolve through (a node of its own
    # in the asset graph).
    assert op.outlets == [target]
    with make_dag():
        # A mapped task's instance, built at run time: Airflow never saw these Assets. (Built
        # by Airflow, it gets the Assets that partial() declared at parse time.)
        op = PgferryOperator(source_table="orders", target_table="mart.orders_copy",
                             _airflow_from_mapped=True, **common)  # fmt: skip
    assert (op.inlets, op.outlets) == ([], [alias])
    with make_dag():
        # A query has no table to name; a templated name is not known before the run.
        op = PgferryOperator(source_query="SELECT 1 AS x", target_table="t_{{ ds_nodash }}",
                             **common)  # fmt: skip
    assert (op.inlets, op.outlets) == ([], [alias])
    with make_dag():
        # A connection Airflow stores elsewhere (metadata DB, secrets backend) is not read.
        op = PgferryOperator(task_id="t", source_conn_id="other", target_conn_id="dwh",
                             source_table="s", target_table="t")  # fmt: skip
    assert op.inlets == []
    assert op.outlets == [Asset(uri="postgres://dwh.example:5432/warehouse/public/t")]
    job = pgferry.Job.from_dict(
        {
            "source": {"dsn": "postgresql://u:pw@a.example/db1", "table": "s.x"},
            "target": {"dsn": "host=b.example dbname=db2", "table": "y"},
        }
    )
    with make_dag():
        op = PgferryOperator(task_id="t", job=job)
    assert op.inlets == [Asset(uri="postgres://a.example:5432/db1/s/x")]
    assert op.outlets == [alias]  # a libpq keyword DSN: resolved at run time
    with make_dag():
        op = PgferryOperator(task_id="t", job=job, overrides={"source.table": "{{ params.t }}"})
    assert op.inlets == []


def test_default_run_key_is_the_task_instance() -> None:
    class TI:
        dag_id, run_id, task_id, map_index = "d", "scheduled__2024-01-02", "copy", 3

    assert run_key_of({"ti": TI()}) == "d/scheduled__2024-01-02/copy/3"
    assert run_key_of({}) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source_table": "a", "source_query": "select 1", "target_table": "b"}, "not both"),
        ({"source_table": "a"}, "give a job"),
        ({"target_table": "b"}, "give a job"),
    ],
)
def test_operator_argument_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PgferryOperator(task_id="t", **kwargs)


def task_identity(op: PgferryOperator, map_index: int = -1) -> dict[str, Any]:
    """The part of a task's context that the default run key renders from."""
    run_id = "scheduled__2024-03-01T10:00:00+00:00"
    ti = SimpleNamespace(map_index=map_index)
    return {"dag": op.dag, "task": op, "run_id": run_id, "ti": ti}


def test_templates_render_a_data_interval_window(connections: list[str]) -> None:
    with make_dag():
        op = PgferryOperator(
            task_id="t",
            source_conn_id="src",
            target_conn_id="dwh",
            source_query="SELECT * FROM orders WHERE region = 'eu'",
            target_table="orders_{{ ds_nodash }}",
            partition={
                "column": "updated_at",
                "lower": "{{ data_interval_start }}",
                "upper": "{{ data_interval_end }}",
                "replace": True,
            },
        )
    start = dt.datetime(2024, 3, 1, 10, tzinfo=dt.UTC)
    context: Any = {
        "ds_nodash": "20240301",
        "data_interval_start": start,
        "data_interval_end": start + dt.timedelta(hours=1),
        **task_identity(op, map_index=2),
    }
    assert op.map_index_template == "{{ task.partition_name }}"
    op.render_template_fields(context)
    job = op.build_job()
    assert job.run_key == "d/scheduled__2024-03-01T10:00:00+00:00/t/2"
    assert op.partition_name == job.partition.name if job.partition else False
    assert str(job.target.table) == "orders_20240301"
    assert job.partition is not None
    assert job.partition.lower == "2024-03-01 10:00:00+00:00"
    assert job.partition.upper == "2024-03-01 11:00:00+00:00"
    assert job.partition.name == "updated_at[2024-03-01 10:00:00+00:00..2024-03-01 11:00:00+00:00)"
    assert job.partition.replace is True


def test_templated_query_parameters_are_bound(connections: list[str]) -> None:
    with make_dag():
        op = PgferryOperator(
            task_id="t",
            source_conn_id="src",
            target_conn_id="dwh",
            source_query="SELECT * FROM orders WHERE updated_at >= $1 AND updated_at < $2",
            source_params=["{{ data_interval_start }}", "{{ data_interval_end }}"],
            target_table="orders",
        )
    start = dt.datetime(2024, 3, 1, 10, tzinfo=dt.UTC)
    context: Any = {
        "data_interval_start": start,
        "data_interval_end": start + dt.timedelta(hours=1),
        **task_identity(op),
    }
    op.render_template_fields(context)
    job = op.build_job()
    assert job.source.query == "SELECT * FROM orders WHERE updated_at >= $1 AND updated_at < $2"
    assert job.source.params == ["2024-03-01 10:00:00+00:00", "2024-03-01 11:00:00+00:00"]


def test_native_parameter_values_become_text(connections: list[str]) -> None:
    op = PgferryOperator(
        task_id="t",
        source_conn_id="src",
        target_conn_id="dwh",
        source_query="SELECT * FROM t WHERE a >= $1 AND b = $2 AND c = $3 AND d = $4",
        source_params=[dt.datetime(2024, 3, 1, 10, tzinfo=dt.UTC), dt.date(2024, 3, 1), 7, None],
        target_table="t2",
    )
    assert op.build_job().source.params == ["2024-03-01 10:00:00+00:00", "2024-03-01", 7, None]


def test_partial_expand_maps_over_partitions() -> None:
    plan = [
        pgferry.Partition(name="p0", column="id", upper=10).model_dump(),
        pgferry.Partition(name="p1", column="id", lower=10).model_dump(),
    ]
    with make_dag() as dag:
        PgferryOperator.partial(
            task_id="copy", source_conn_id="src", target_conn_id="dwh", source_table="a",
            target_table="b",
        ).expand(partition=plan)  # fmt: skip
    mapped = dag.get_task("copy")
    assert mapped.expand_input.value == {"partition": plan}


# --- Operator: building the job ---------------------------------------------------------------


def test_job_from_keywords(connections: list[str]) -> None:
    with make_dag():
        op = PgferryOperator(
            task_id="copy",
            source_conn_id="src",
            target_conn_id="dwh",
            source_table="public.orders",
            target_table="staging.orders",
            transform="my_pkg.transforms:clean",
            mode="upsert",
            key=["id"],
            incremental_column="updated_at",
            batch_size=500,
            workers=0,
            max_rejects=10,
            partition=pgferry.Partition(name="p", column="id", lower=1, upper=100),
            overrides={"max_retries": 0, "target.columns": {"x": "text"}},
        )
    job = op.build_job()
    assert job.name == "d.copy"
    assert job.source.dsn == dsn_from_connection(connection("src"))
    assert job.target.dsn == "postgresql://loader:secret@dwh.example/warehouse"
    assert (str(job.source.table), job.source.query) == ("public.orders", None)
    assert (str(job.target.table), job.target.mode, job.target.key) == (
        "staging.orders",
        "upsert",
        ["id"],
    )
    assert job.target.columns == {"x": "text"}
    assert job.incremental is not None and job.incremental.column == "updated_at"
    assert (job.transform, job.batch_size, job.workers, job.max_rejects, job.max_retries) == (
        "my_pkg.transforms:clean",
        500,
        0,
        10,
        0,
    )
    assert job.partition == pgferry.Partition(name="p", column="id", lower=1, upper=100)


def test_job_file_with_keyword_overrides(connections: list[str], tmp_path: Path) -> None:
    path = tmp_path / "orders.yaml"
    path.write_text(
        "name: orders\n"
        "source: {table: public.orders, key: id}\n"
        "target: {table: public.orders_copy, mode: append}\n"
        "batch_size: 100\n"
    )
    op = PgferryOperator(
        task_id="t",
        job=path,
        source_conn_id="src",
        target_conn_id="dwh",
        source_query="SELECT * FROM orders WHERE id < 10",
        mode="replace",
    )
    job = op.build_job()
    assert job.name == "orders"  # a job keeps its own name
    assert (job.source.table, job.source.query) == (None, "SELECT * FROM orders WHERE id < 10")
    assert (str(job.target.table), job.target.mode, job.batch_size) == (
        "public.orders_copy",
        "replace",
        100,
    )
    assert job.source.dsn is not None and job.source.dsn.startswith("postgresql://reader:")


def test_job_object_with_connections(connections: list[str]) -> None:
    base = pgferry.Job(
        name="nightly", source={"table": "a"}, target={"table": "b"}, transform=str.upper
    )
    op = PgferryOperator(task_id="t", job=base, source_conn_id="src", target_conn_id="dwh")
    job = op.build_job()
    assert (job.name, job.transform) == ("nightly", str.upper)
    assert job.target.dsn == "postgresql://loader:secret@dwh.example/warehouse"


def test_partition_as_json_text(connections: list[str]) -> None:
    op = PgferryOperator(
        task_id="t",
        source_conn_id="src",
        target_conn_id="dwh",
        source_table="a",
        target_table="b",
        partition='{"column": "id", "lower": 5}',
    )
    job = op.build_job()
    assert job.partition == pgferry.Partition(name="id[5..)", column="id", lower=5)


# --- Operator: execute ------------------------------------------------------------------------


def run_result(**kw: Any) -> pgferry.RunResult:
    fields: dict[str, Any] = {"status": "success", "rows_read": 3, "rows_written": 3, **kw}
    return pgferry.RunResult(job="d.copy", **fields)


def copy_operator() -> PgferryOperator:
    with make_dag():
        return PgferryOperator(
            task_id="copy",
            source_conn_id="src",
            target_conn_id="dwh",
            source_table="public.orders",
            target_table="public.orders_copy",
            progress_interval=0,
        )


def test_execute_returns_the_run_result_and_emits_the_target_asset(
    connections: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_run(job: pgferry.Job, on_progress: Any = None) -> pgferry.RunResult:
        on_progress(pgferry.Progress(100, 90, 0, 1000, "rows"))
        on_progress(pgferry.Progress(0, 0, 3 * 1024 * 1024, None, "pipe"))
        return run_result(watermark_after="2024-01-01")

    monkeypatch.setattr(ops.pgferry, "run", fake_run)
    op = copy_operator()
    events = OutletEventAccessors()
    out = op.execute({"outlet_events": events})  # type: ignore[arg-type]
    assert out == run_result(watermark_after="2024-01-01").to_dict() | {"run_id": out["run_id"]}
    json.dumps(out)
    (event,) = events[AssetAlias(name="pgferry:d.copy")].asset_alias_events
    assert event.dest_asset_key.uri == "postgres://dwh.example:5432/warehouse/public/orders_copy"
    assert event.extra["rows_written"] == 3
    assert event.extra["source"] == "postgres://db.example:6543/shop/public/orders"
    assert event.extra["watermark_after"] == "2024-01-01"
    text = capsys.readouterr().out  # the task log, as Airflow's logging prints it here
    assert "100 of ~1000 rows read, 90 written (" in text and "rows/s)" in text
    assert "3.0 MB copied" in text
    assert "secret" not in text and "p%40ss" not in text


def test_execute_on_a_declared_outlet_adds_extra(
    connections: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ops.pgferry, "run", lambda job, on_progress=None: run_result())
    target = Asset(uri="postgres://dwh.example:5432/warehouse/public/t")
    op = PgferryOperator(
        task_id="t", source_conn_id="src", target_conn_id="dwh", source_table="s",
        target_table="t", outlets=[target],
    )  # fmt: skip
    events = OutletEventAccessors()
    op.execute({"outlet_events": events})  # type: ignore[arg-type]
    assert events[target].extra["rows_written"] == 3


def test_a_skipped_run_adds_no_event_through_the_alias(
    connections: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    skipped = run_result(status="skipped", rows_written=0, committed_by="earlier-run")
    monkeypatch.setattr(ops.pgferry, "run", lambda job, on_progress=None: skipped)
    op = copy_operator()
    events = OutletEventAccessors()
    out = op.execute({"outlet_events": events})  # type: ignore[arg-type]
    assert (out["status"], out["committed_by"]) == ("skipped", "earlier-run")
    assert events[AssetAlias(name="pgferry:d.copy")].asset_alias_events == []
    # On a declared outlet (whose event Airflow records anyway) the extra says so.
    target = Asset(uri="postgres://dwh.example:5432/warehouse/public/orders_copy")
    with make_dag():
        op = PgferryOperator(task_id="copy", source_conn_id="src", target_conn_id="dwh",
                             source_table="public.orders", target_table="public.orders_copy",
                             outlets=[target])  # fmt: skip
    op.execute({"outlet_events": events})  # type: ignore[arg-type]
    assert (events[target].extra["status"], events[target].extra["rows_written"]) == ("skipped", 0)


def failing_run(exc: Exception) -> Any:
    def run(job: pgferry.Job, on_progress: Any = None) -> pgferry.RunResult:
        exc.result = run_result(status="failed")  # type: ignore[attr-defined]
        raise exc

    return run


def test_transient_failure_is_retryable(
    connections: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cause = TransientLoadError("connection lost", job="d.copy", batch=3)
    monkeypatch.setattr(ops.pgferry, "run", failing_run(cause))
    with pytest.raises(AirflowException) as info:
        copy_operator().execute({"outlet_events": OutletEventAccessors()})  # type: ignore[arg-type]
    assert not isinstance(info.value, AirflowFailException)
    assert info.value.__cause__ is cause
    assert "resumes from the last committed batch" in str(info.value)
    assert "connection lost [job 'd.copy', stage load, batch 3]" in str(info.value)


def test_terminal_failure_fails_without_retry(
    connections: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cause = LoadError("value too long for type character varying(3)", column="code")
    monkeypatch.setattr(ops.pgferry, "run", failing_run(cause))
    with pytest.raises(AirflowFailException) as info:
        copy_operator().execute({"outlet_events": OutletEventAccessors()})  # type: ignore[arg-type]
    assert info.value.__cause__ is cause
    assert "column 'code'" in str(info.value)


def test_invalid_job_fails_without_retry(connections: list[str]) -> None:
    # (A query source: a source table's primary key would be the default key.)
    op = PgferryOperator(
        task_id="t", source_conn_id="src", target_conn_id="dwh", source_query="SELECT 1 AS id",
        target_table="t", mode="upsert",
    )  # fmt: skip
    with pytest.raises(AirflowFailException, match=r"upsert' needs target\.key") as info:
        op.execute({"outlet_events": OutletEventAccessors()})  # type: ignore[arg-type]
    assert isinstance(info.value.__cause__, pgferry.ConfigError)
    assert "secret" not in str(info.value)


def test_execute_inside_a_running_event_loop(
    connections: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    monkeypatch.setattr(ops.pgferry, "run", lambda job, on_progress=None: run_result())

    async def main() -> dict[str, Any]:
        ctx: Any = {"outlet_events": OutletEventAccessors()}
        return copy_operator().execute(ctx)

    assert asyncio.run(main())["rows_written"] == 3


# --- Lineage ----------------------------------------------------------------------------------


def test_map_columns() -> None:
    source = ["id", "name", "email"]
    assert lin.map_columns(source, ["id", "name", "extra"], transformed=False) == {
        "id": (["id"], "identity"),
        "name": (["name"], "identity"),
    }
    assert lin.map_columns(
        source,
        ["id", "first", "email", "score"],
        transformed=True,
        declared={"first": ["name"], "email": ["email", "id"]},
    ) == {
        "id": (["id"], "same-name"),
        "first": (["name"], "declared"),
        "email": (["email", "id"], "declared"),
        "score": (source, "all"),
    }


def declared_transform(row: Any) -> Any:
    return row


declared_transform.__pgferry_column_lineage__ = {"full": ("first", "last"), "n": "name"}  # type: ignore[attr-defined]


def test_declared_lineage() -> None:
    assert lin.declared_lineage(declared_transform) == {"full": ["first", "last"], "n": ["name"]}
    assert lin.declared_lineage(f"{__name__}:declared_transform") is not None
    assert lin.declared_lineage(str.upper) is None
    assert lin.declared_lineage(None) is None


def test_operator_lineage_of_a_source_query() -> None:
    src_ns, tgt_ns = "postgres://db:5432", "postgres://dwh:5432"
    job = pgferry.Job(
        source={"query": "SELECT o.id, c.name AS customer, 1 AS one FROM orders o "
                         "JOIN crm.customers c ON c.id = o.customer_id"},
        target={"table": "t"},
    )  # fmt: skip
    info = lin.gather(
        job,
        source=None,
        target=lin.DatasetRef(tgt_ns, "dwh.public.t"),
        namespace=src_ns,
        database="shop",
        introspect=False,
    )
    orders, customers = (
        lin.DatasetRef(src_ns, "shop.public.orders"),
        lin.DatasetRef(src_ns, "shop.crm.customers"),
    )
    assert set(info.query_inputs) == {orders, customers}
    assert info.query_lineage["customer"] == [(customers, "name")]
    info.source_columns = [Column("id", "bigint"), Column("customer", "text"), Column("one", "int")]
    info.target_columns = [*info.source_columns, Column("loaded_at", "timestamptz")]
    result = lin.operator_lineage(info, {"rows_written": 7, "bytes_written": 8192})
    assert {d.name for d in result.inputs} == {"shop.public.orders", "shop.crm.customers"}
    (output,) = result.outputs
    fields = output.facets["columnLineage"].fields
    assert {c: [(f.name, f.field) for f in v.inputFields] for c, v in fields.items()} == {
        "id": [("shop.public.orders", "id")],
        "customer": [("shop.crm.customers", "name")],
    }
    assert fields["id"].transformationType == "IDENTITY"
    assert [f.name for f in output.facets["schema"].fields] == [
        "id",
        "customer",
        "one",
        "loaded_at",
    ]
    stats = output.outputFacets["outputStatistics"]
    assert (stats.rowCount, stats.size) == (7, 8192)


def test_lineage_is_none_without_the_openlineage_provider(
    connections: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)
    assert copy_operator().get_openlineage_facets_on_complete(None) is None


def test_lineage_never_raises(connections: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("catalog unreachable")

    monkeypatch.setattr(lin, "gather", boom)
    op = copy_operator()
    assert op.get_openlineage_facets_on_complete(None) is None
    assert op.get_openlineage_facets_on_failure(None) is None


def test_lineage_without_introspection_still_names_datasets(
    connections: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_catalog(job: pgferry.Job, inputs: Any) -> Any:
        raise OSError("connection refused")

    monkeypatch.setattr(lin, "_describe", no_catalog)
    result = copy_operator().get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in result.inputs] == [
        ("postgres://db.example:6543", "shop.public.orders")
    ]
    assert [(d.namespace, d.name) for d in result.outputs] == [
        ("postgres://dwh.example:5432", "warehouse.public.orders_copy")
    ]


# --- Mapped tasks and their Assets (a real scheduler's race) ----------------------------------


def test_partial_declares_the_mapped_tasks_assets_at_parse_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every map index records its event on a target Airflow knew since parsing, so that no
    two mapped tasks race to create it through the alias (UniqueViolation in the API server)."""
    monkeypatch.setenv("AIRFLOW_CONN_SRC", "postgres://u:pw@db.example:6543/shop")
    monkeypatch.setenv("AIRFLOW_CONN_DWH", "postgres://u:pw@dwh.example/warehouse")
    parts = [{"column": "id", "lower": 1, "upper": 5}, {"column": "id", "lower": 5}]
    common = {"source_conn_id": "src", "source_table": "orders", "key": "id"}
    with make_dag():
        known = PgferryOperator.partial(
            task_id="known", target_conn_id="dwh", target_table="mart.orders_copy", **common
        ).expand(partition=parts)
        unknown = PgferryOperator.partial(
            task_id="unknown", target_conn_id="in_the_db", target_table="t", **common
        ).expand(partition=parts)
        mine = PgferryOperator.partial(
            task_id="mine", target_conn_id="dwh", target_table="t", outlets=[], **common
        ).expand(partition=parts)
    source = Asset(uri="postgres://db.example:6543/shop/public/orders")
    assert known.inlets == [source]
    assert known.outlets == [Asset(uri="postgres://dwh.example:5432/warehouse/mart/orders_copy")]
    assert unknown.outlets == [AssetAlias(name="pgferry:d.unknown")]
    assert mine.outlets == []  # what the DAG author gave is kept


def test_only_map_index_zero_creates_the_target_through_the_alias(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pgferry.airflow import _assets

    monkeypatch.setattr(_assets, "_POLL_S", 0.0)
    target = "postgres://h:5432/db/public/t"
    warnings: list[str] = []

    def warn(msg: str, *args: Any) -> None:
        warnings.append(msg % args)

    def allowed(map_index: int | None, answers: list[set[str] | None], wait_s: float = 5) -> bool:
        it = iter(answers)
        return _assets.alias_event_allowed(
            map_index, "pgferry:d.t", target, warn=warn, wait_s=wait_s,
            lookup=lambda name: next(it, answers[-1]),
        )  # fmt: skip

    assert allowed(None, [None]) and allowed(-1, [set()])  # unmapped: always
    assert allowed(0, [set()])  # map index 0 creates the Asset and links the alias
    assert allowed(3, [{target}])  # the alias resolves already: nothing to create
    # Map index 2 waits until map index 0 has created it.
    assert allowed(2, [set(), set(), {"postgres://other"}, {target}])
    assert not warnings
    # Never created in time, or no way to ask: no event, one warning, no failed task.
    assert not allowed(1, [set()], wait_s=0)
    assert not allowed(1, [None])
    assert len(warnings) == 2 and "only map index 0 may create it" in warnings[0]


# --- Runs with no logical date (Airflow 3's default for the UI, the REST API and the CLI) -----


def test_example_templates_render_for_a_run_without_a_logical_date(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dags = Path(__file__).resolve().parents[2] / "dags"
    monkeypatch.syspath_prepend(str(dags))
    monkeypatch.setenv("AIRFLOW_CONN_PG_SOURCE", "postgres://u@db.example:5432/src")
    monkeypatch.setenv("AIRFLOW_CONN_PG_TARGET", "postgres://u@dwh.example:5432/dwh")
    bag = DagBag(dag_folder=str(dags))
    assert not bag.import_errors
    run_after = dt.datetime(2026, 12, 1, 21, 30, tzinfo=dt.UTC)
    rendered = {}
    for dag in bag.dags.values():
        for task in dag.tasks:
            if not isinstance(task, PgferryOperator):
                continue
            # What Airflow's task runner gives a run with "logical_date": null: no ds, ts,
            # logical_date or data_interval_* keys at all.
            context = {
                "dag": dag,
                "task": task,
                "run_id": "manual__2026-12-01T21:30:00+00:00",
                "ti": SimpleNamespace(map_index=-1),
                "params": {},
                "dag_run": SimpleNamespace(
                    logical_date=None,
                    run_after=run_after,
                    data_interval_start=None,
                    data_interval_end=None,
                ),
            }
            task.render_template_fields(context)  # type: ignore[arg-type]
            rendered[task.task_id] = (task.source_params, task.run_key)
    assert rendered["snapshot_customers"] == (
        ["2026-12-01"],
        "pgferry_daily_snapshot/manual__2026-12-01T21:30:00+00:00/snapshot_customers/-1",
    )
    assert rendered["upsert_orders"][0] == [str(run_after)]
    assert rendered["send_orders"][1] == (
        "pgferry_to_api/manual__2026-12-01T21:30:00+00:00/send_orders/-1"
    )
    assert set(rendered) == {"snapshot_customers", "upsert_orders", "copy_customers", "send_orders"}


def test_the_url_quoted_password_is_handed_to_the_secret_masker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.sdk.log import mask_secret as real_mask_secret

    from pgferry.airflow import hooks

    masked: list[Any] = []

    def record(secret: Any, name: str | None = None) -> None:
        masked.append(secret)
        real_mask_secret(secret, name)

    monkeypatch.setattr(hooks, "mask_secret", record)
    dsn = dsn_from_connection(connection("src"))  # password p@ss/w:rd
    assert "p%40ss%2Fw%3Ard" in dsn
    assert masked == ["p%40ss%2Fw%3Ard"]
    # What Airflow's masker does with it in a task log line.
    from airflow.sdk._shared.secrets_masker import redact

    assert "p%40ss" not in str(redact(f"connecting to {dsn}"))
    masked.clear()
    dsn_from_connection(connection("dwh"))  # nothing to quote: Airflow masks it as stored
    assert masked == []
