"""The columnar lane: Arrow and Polars transforms, end to end, with exact results.

Every run moves the standard workload through the standard transform written with
``pyarrow.compute`` or Polars, and the target must equal ``bench_expected`` (the server's own
computation of it) in both directions, as in the benchmark.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_retries import terminating_after_batches

import pgferry
from helpers import Databases, execute, fetch, fetchval
from pgferry.demo import workload_statements

KINDS = {
    "arrow": "ferry_transforms:split_name_arrow",
    "polars": "ferry_transforms:split_name_polars",
}
COLUMNS = "id, first_name, last_name, age, email, created_at::text, score::text, payload::text"


def load_workload(dsn: str, rows: int) -> None:
    for statement in workload_statements(rows):
        execute(dsn, statement)


def expected(dbs: Databases) -> list[tuple[Any, ...]]:
    query = f"SELECT {COLUMNS} FROM bench_expected ORDER BY id"
    return [tuple(r) for r in fetch(dbs.source, query)]


def target_rows(dbs: Databases, table: str = "dst") -> list[tuple[Any, ...]]:
    return [tuple(r) for r in fetch(dbs.target, f"SELECT {COLUMNS} FROM {table} ORDER BY id")]


def run(dbs: Databases, kind: str, **settings: Any) -> pgferry.RunResult:
    target = {"dsn": dbs.target, "table": "dst", **settings.pop("target", {})}
    job = pgferry.Job(
        source={"dsn": dbs.source, "table": "bench_src", "key": "id"},
        target=target,
        transform=KINDS[kind],
        batch_size=settings.pop("batch_size", 700),
        **settings,
    )
    result = pgferry.run(job)
    assert result.status == "success"
    assert result.path == "columnar"
    return result


@pytest.mark.parametrize("kind", KINDS)
def test_append_equals_the_servers_own_transform(dbs: Databases, kind: str) -> None:
    load_workload(dbs.source, 5_000)
    result = run(dbs, kind)
    assert result.rows_read == result.rows_written == 5_000
    assert result.batches == 8  # 700 rows a batch, in order, each committed with its ledger
    assert target_rows(dbs) == expected(dbs)
    # The target was created with the source's types for the columns it kept.
    types = dict(
        fetch(
            dbs.target,
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'dst'::regclass AND attnum > 0",
        )
    )
    assert types["created_at"] == "timestamp with time zone"
    assert types["payload"] == "jsonb"
    assert types["first_name"] == "text"
    # ... and their NOT NULL, as the rows lane does (an appended target gets no primary key).
    not_null = fetch(
        dbs.target,
        "SELECT attname FROM pg_attribute WHERE attrelid = 'dst'::regclass AND attnum > 0 "
        "AND attnotnull ORDER BY attname",
    )
    assert [r[0] for r in not_null] == ["created_at", "id"]


@pytest.mark.parametrize("kind", KINDS)
def test_upsert_through_the_staging_table(dbs: Databases, kind: str) -> None:
    load_workload(dbs.source, 3_000)
    run(dbs, kind, target={"mode": "upsert", "key": ["id"]})
    # The target was created with the key as its primary key, as on the rows lane.
    primary_key = fetchval(
        dbs.target,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'dst'::regclass AND contype = 'p'",
    )
    assert primary_key == "PRIMARY KEY (id)"
    execute(dbs.source, "UPDATE bench_src SET name = 'Ada Lovelace' WHERE id % 10 = 0")
    execute(
        dbs.source,
        "INSERT INTO bench_src SELECT id + 10000, name, age, email, created_at, score, payload "
        "FROM bench_src WHERE id <= 50",
    )
    result = run(dbs, kind, target={"mode": "upsert", "key": ["id"]})
    assert result.rows_read == 3_050
    assert result.rows_written == 300 + 50  # only the changed and the new rows are rewritten
    assert target_rows(dbs) == expected(dbs)


@pytest.mark.parametrize("kind", KINDS)
def test_replace_swaps_a_shadow_in(dbs: Databases, kind: str) -> None:
    load_workload(dbs.source, 2_000)
    run(dbs, kind)
    execute(dbs.target, "INSERT INTO dst (id, first_name, created_at) VALUES (-1, 'stale', now())")
    execute(dbs.source, "DELETE FROM bench_src WHERE id > 1500")
    result = run(dbs, kind, target={"mode": "replace"})
    assert result.rows_written == 1_500
    assert target_rows(dbs) == expected(dbs)


@pytest.mark.parametrize("kind", KINDS)
def test_incremental_continues_after_the_watermark(dbs: Databases, kind: str) -> None:
    load_workload(dbs.source, 2_000)
    inc = {"column": "created_at"}
    first = run(dbs, kind, incremental=inc)
    assert first.rows_read == 2_000
    top = fetchval(dbs.source, "SELECT max(created_at)::text FROM bench_src")
    assert first.watermark_after is not None
    assert fetchval(dbs.source, "SELECT $1::text::timestamptz::text", first.watermark_after) == top
    execute(
        dbs.source,
        "INSERT INTO bench_src SELECT id + 2000, name, age, email, "
        "created_at + interval '1000 days', score, payload FROM bench_src WHERE id <= 333",
    )
    second = run(dbs, kind, incremental=inc)
    assert second.rows_read == 333  # the watermark is a bound parameter of the Arrow reader
    assert target_rows(dbs) == expected(dbs)
    third = run(dbs, kind, incremental=inc)
    assert third.rows_read == 0


def test_a_job_file_names_a_polars_transform(dbs: Databases, tmp_path: Path) -> None:
    load_workload(dbs.source, 1_000)
    path = tmp_path / "job.yaml"
    path.write_text(
        "name: polars-file\n"
        f"source: {{dsn: '{dbs.source}', table: bench_src, key: id}}\n"
        f"target: {{dsn: '{dbs.target}', table: dst}}\n"
        "transform: pgferry.demo:split_name_polars\n",
        encoding="utf-8",
    )
    result = pgferry.run(pgferry.load_job(path))
    assert result.path == "columnar"
    assert result.batches == 1  # no batch_size: a batch is what the driver reads (≈1 MiB)
    assert target_rows(dbs) == expected(dbs)


def test_batch_bytes_sizes_the_batches_the_reader_gets(dbs: Databases, tmp_path: Path) -> None:
    """``batch_bytes`` from a job file: 20,000 rows (≈2.6 MiB as binary COPY) in 64 KiB
    batches are many batches, each committed with its ledger row; the result is exact."""
    load_workload(dbs.source, 20_000)
    path = tmp_path / "job.yaml"
    path.write_text(
        "name: arrow-bytes\n"
        f"source: {{dsn: '{dbs.source}', table: bench_src, key: id}}\n"
        f"target: {{dsn: '{dbs.target}', table: dst}}\n"
        "transform: pgferry.demo:split_name_arrow\n"
        "batch_bytes: 65536\n",
        encoding="utf-8",
    )
    result = pgferry.run(pgferry.load_job(path))
    assert result.path == "columnar"
    assert 20 <= result.batches <= 80, result.batches  # ≈ 2.6 MiB / 64 KiB = 40
    ledger = fetchval(dbs.target, "SELECT batches FROM pgferry.ledger WHERE job = 'arrow-bytes'")
    assert ledger == result.batches
    assert target_rows(dbs) == expected(dbs)


def test_the_arrow_lane_does_not_load_polars(dbs: Databases) -> None:
    """An Arrow transform's run imports neither Polars nor ADBC's DB-API module (which imports
    Polars: ≈ 50 MiB of resident memory for nothing)."""
    load_workload(dbs.source, 1_000)
    child = (
        "import sys, pgferry\n"
        "job = pgferry.Job.from_dict({'source': {'dsn': sys.argv[1], 'table': 'bench_src'},"
        " 'target': {'dsn': sys.argv[2], 'table': 'dst'},"
        " 'transform': 'pgferry.demo:split_name_arrow'})\n"
        "assert pgferry.run(job).path == 'columnar'\n"
        "names = ('polars', 'adbc_driver_manager.dbapi')\n"
        "print(sorted(m for m in sys.modules if m.startswith(names)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", child, dbs.source, dbs.target],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_transform_errors_name_the_batch_and_rejects_isolate_rows(dbs: Databases) -> None:
    load_workload(dbs.source, 100)
    job: dict[str, Any] = {
        "source": {"dsn": dbs.source, "table": "bench_src", "key": "id"},
        "target": {"dsn": dbs.target, "table": "dst"},
        "transform": "ferry_transforms:polars_fail_on_7",
        "batch_size": 20,
    }
    with pytest.raises(pgferry.TransformError, match="seven is not allowed") as info:
        pgferry.run(pgferry.Job(**job))
    assert info.value.batch == 0
    result = pgferry.run(pgferry.Job(**{**job, "max_rejects": 5}))
    assert result.rows_written == 99 and result.rows_rejected == 1
    rejected = fetch(dbs.target, """SELECT "row"->>'id' FROM pgferry.rejects""")
    assert [r[0] for r in rejected] == ["7"]


def test_a_transform_returning_something_else_is_refused(dbs: Databases) -> None:
    load_workload(dbs.source, 10)
    job = pgferry.Job(
        source={"dsn": dbs.source, "table": "bench_src"},
        target={"dsn": dbs.target, "table": "dst"},
        transform="ferry_transforms:arrow_returns_a_list",
    )
    with pytest.raises(pgferry.TransformError, match=r"expected a pyarrow\.RecordBatch"):
        pgferry.run(job)


@pytest.mark.slow
@pytest.mark.parametrize(
    "condition",
    [
        "application_name LIKE '%:arrow-reader'",  # the ADBC reader, mid-stream
        "application_name LIKE '%:loader'",  # the loader, between or in batches
    ],
)
@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_terminated_backend_is_retried_without_duplicates(
    dbs: Databases, pg_server_dsn: str, condition: str, mode: str
) -> None:
    load_workload(dbs.source, 10_000)
    job = pgferry.Job(
        name="retry",
        source={"dsn": dbs.source, "table": "bench_src", "key": "id"},
        target={"dsn": dbs.target, "table": "people", "mode": mode, "key": "id"},
        transform="ferry_transforms:polars_slow_identity",
        batch_size=200,
        retry_backoff=0.1,
        incremental={"column": "created_at"} if mode == "upsert" else None,
    )
    reader = "arrow-reader" in condition
    database = (dbs.source if reader else dbs.target).rsplit("/", 1)[1]
    # Some batches commit first, so that the retry resumes after them (a bound position).
    with terminating_after_batches(dbs.target, pg_server_dsn, database, condition) as killed:
        result = pgferry.run(job)
    assert killed, "the test did not manage to terminate a backend mid-run"
    assert result.attempts >= 2 and result.path == "columnar"
    assert fetchval(dbs.target, "SELECT count(*) FROM people") == 10_000
    assert fetchval(dbs.target, "SELECT count(DISTINCT id) FROM people") == 10_000
    src = fetchval(dbs.source, "SELECT sum(hashtext(b::text)) FROM bench_src b")
    dst = fetchval(dbs.target, "SELECT sum(hashtext(b::text)) FROM people b")
    assert src == dst


@pytest.mark.parametrize("kind", KINDS)
def test_partitions_reload_their_slice(dbs: Databases, kind: str) -> None:
    """A partition's bounds are bound parameters of the Arrow reader; ``replace`` reloads it."""
    load_workload(dbs.source, 3_000)
    for lower, upper in ((None, 1_000), (1_000, 2_000), (2_000, None)):
        part = {"name": f"p{lower}", "column": "id", "lower": lower, "upper": upper}
        result = run(dbs, kind, partition={**part, "replace": True})
        assert result.rows_written == (999 if lower is None else 1_000 if upper else 1_001)
    execute(dbs.target, "UPDATE dst SET first_name = 'stale' WHERE id BETWEEN 1000 AND 1999")
    part = {"name": "p1000", "column": "id", "lower": 1_000, "upper": 2_000, "replace": True}
    assert run(dbs, kind, partition=part).rows_written == 1_000
    assert target_rows(dbs) == expected(dbs)


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_source_replaces_with_nothing(dbs: Databases, kind: str) -> None:
    load_workload(dbs.source, 100)
    run(dbs, kind)
    execute(dbs.source, "DELETE FROM bench_src")
    result = run(dbs, kind, target={"mode": "replace"})
    assert (result.rows_read, result.rows_written) == (0, 0)
    assert fetchval(dbs.target, "SELECT count(*) FROM dst") == 0


@pytest.mark.parametrize("kind", KINDS)
def test_rows_the_target_refuses_are_set_aside(dbs: Databases, kind: str) -> None:
    """The batch is halved until the refused rows are found; the others are written."""
    load_workload(dbs.source, 1_000)
    execute(dbs.source, "UPDATE bench_src SET name = 'Bo ' || repeat('x', 30) WHERE id IN (7, 500)")
    execute(
        dbs.target,
        "CREATE TABLE dst (id bigint PRIMARY KEY, first_name text, last_name varchar(20), "
        "age int, email text, created_at timestamptz, score float8, payload jsonb)",
    )
    with pytest.raises(pgferry.LoadError, match="last_name") as info:
        run(dbs, kind)
    assert info.value.column == "last_name"
    result = run(dbs, kind, max_rejects=2)
    assert (result.rows_written, result.rows_rejected) == (998, 2)
    query = """SELECT "row"->>'id', "column" FROM pgferry.rejects ORDER BY ("row"->>'id')::int"""
    rejected = fetch(dbs.target, query)
    assert [tuple(r) for r in rejected] == [("7", "last_name"), ("500", "last_name")]
    assert fetchval(dbs.target, "SELECT count(*) FROM dst") == 998


def test_an_http_target_refuses_a_columnar_transform(dbs: Databases) -> None:
    load_workload(dbs.source, 10)
    job = pgferry.Job.from_dict(
        {
            "source": {"dsn": dbs.source, "table": "bench_src", "key": "id"},
            "target": {"http": {"url": "http://127.0.0.1:9/never"}},
            "state": {"dsn": dbs.target},
            "transform": "pgferry.demo:split_name_polars",
        }
    )
    with pytest.raises(pgferry.ConfigError, match="an HTTP target takes a row or batch"):
        pgferry.run(job)
