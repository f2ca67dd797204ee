"""The engine end to end against a real PostgreSQL: correctness, modes, paths and failures."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

import pgferry
from helpers import Databases, differences, execute, fetch, fetchval, job_with, load_workload
from pgferry.errors import (
    ConfigError,
    ConnectError,
    SchemaError,
    TransformError,
    Transient,
)


def job(dbs: Databases, **kw: object) -> pgferry.Job:
    defaults = {
        "source": {"dsn": dbs.source, "table": "bench_src", "key": "id"},
        "target": {"dsn": dbs.target, "table": "people"},
    }
    built: pgferry.Job = job_with(defaults, **kw)
    return built


# Tiny batches through a pool of two processes take seconds: make test runs them, test-fast
# keeps the pool with one batch size.
STANDARD_CASES = [
    pytest.param(workers, batch_size, id=f"{workers}-{batch_size}", marks=slow)
    for workers in (0, 2, "auto")
    for batch_size in (1, 7, 10_000)
    for slow in [[pytest.mark.slow] if workers == 2 and batch_size < 10_000 else []]
]


@pytest.mark.parametrize(("workers", "batch_size"), STANDARD_CASES)
def test_standard_transform_matches_sql(dbs: Databases, batch_size: int, workers: object) -> None:
    rows = 300 if batch_size == 1 else 2_000
    load_workload(dbs.source, rows)
    # Same database for source and target so that EXCEPT can compare them in SQL.
    j = job(
        dbs,
        target={"dsn": dbs.source},
        transform="ferry_transforms:split_name",
        batch_size=batch_size,
        workers=workers,
    )
    result = pgferry.run(j)
    assert result.status == "success"
    assert result.path == "rows"
    assert result.rows_read == rows
    assert result.rows_written == rows
    assert result.batches == -(-rows // batch_size)
    assert differences(dbs.source) == 0
    if workers == 2:
        assert result.workers == 2


def test_batch_transform_matches_sql(dbs: Databases) -> None:
    load_workload(dbs.source, 3_000)
    j = job(
        dbs,
        target={"dsn": dbs.source},
        transform="ferry_transforms:split_name_batch",
        batch_size=1_000,
        workers=0,
    )
    assert pgferry.run(j).rows_written == 3_000
    assert differences(dbs.source) == 0


def test_python_callable_transform_runs_inline(dbs: Databases) -> None:
    load_workload(dbs.source, 500)
    j = job(
        dbs, target={"dsn": dbs.source, "table": "copy"}, transform=lambda r: dict(r), workers=2
    )
    result = pgferry.run(j)
    # A lambda cannot be imported by a worker process: pgferry runs it inline instead.
    assert result.workers == 0
    assert result.rows_written == 500
    assert differences(dbs.source, "copy", "bench_src") == 0


def test_pipe_without_transform(dbs: Databases) -> None:
    load_workload(dbs.source, 5_000)
    result = pgferry.run(job(dbs))
    assert result.path == "pipe"
    assert result.rows_written == result.rows_read == 5_000
    assert result.bytes_written > 0
    src = fetch(dbs.source, "SELECT b::text FROM bench_src b ORDER BY id")
    dst = fetch(dbs.target, "SELECT b::text FROM people b ORDER BY id")
    assert src == dst


def test_pipe_with_query_and_existing_wider_target(dbs: Databases) -> None:
    """A query source into an existing table whose types differ (int → bigint) and which has
    an extra defaulted column: the pipe casts on the source side."""
    load_workload(dbs.source, 1_000)
    execute(dbs.target, "CREATE TABLE people (id bigint, age bigint, extra text DEFAULT 'x')")
    j = job(dbs, source={"table": None, "query": "SELECT id, age FROM bench_src WHERE id <= 10;"})
    result = pgferry.run(j)
    assert result.rows_written == 10
    assert fetch(dbs.target, "SELECT count(*), sum(age), min(extra) FROM people")[0] == (
        10,
        18 * 10 + 55,
        "x",
    )


def test_empty_source(dbs: Databases) -> None:
    load_workload(dbs.source, 0)
    for transform in (None, "ferry_transforms:split_name"):
        table = f"t_{bool(transform)}"
        result = pgferry.run(job(dbs, transform=transform, target={"table": table}))
        assert (result.rows_read, result.rows_written, result.status) == (0, 0, "success")
    # Without a transform the columns are known: the table is created, empty.
    assert fetchval(dbs.target, "SELECT count(*) FROM t_false") == 0


def test_transform_drops_and_fans_out(dbs: Databases) -> None:
    load_workload(dbs.source, 1_000)
    r1 = pgferry.run(
        job(dbs, transform="ferry_transforms:drop_odd", batch_size=100, target={"table": "evens"})
    )
    assert (r1.rows_read, r1.rows_written) == (1_000, 500)
    assert fetchval(dbs.target, "SELECT count(*) FILTER (WHERE id % 2 = 1) FROM evens") == 0
    r2 = pgferry.run(
        job(dbs, transform="ferry_transforms:fan_out", batch_size=64, target={"table": "doubled"})
    )
    assert (r2.rows_read, r2.rows_written) == (1_000, 2_000)
    rows = fetch(
        dbs.target, "SELECT copy, count(*), count(DISTINCT id) FROM doubled GROUP BY 1 ORDER BY 1"
    )
    assert [tuple(r) for r in rows] == [(1, 1_000, 1_000), (2, 1_000, 1_000)]
    types = fetch(
        dbs.target,
        "SELECT attname, format_type(atttypid, atttypmod) "
        "FROM pg_attribute WHERE attrelid = 'doubled'::regclass AND attnum > 0 "
        "ORDER BY attnum",
    )
    assert [tuple(t) for t in types] == [("id", "bigint"), ("copy", "bigint"), ("name", "text")]


def test_transform_changing_type_needs_declared_column(dbs: Databases) -> None:
    load_workload(dbs.source, 10)
    j = job(dbs, transform="ferry_transforms:age_as_text", target={"columns": {"age": "text"}})
    assert pgferry.run(j).rows_written == 10
    assert fetchval(dbs.target, "SELECT age FROM people WHERE id = 1") == "19 years"


HOSTILE_SCHEMA = 'Mixed "Case"; --'
HOSTILE_TABLE = 'x"; DROP TABLE y; --'


@pytest.mark.parametrize("transform", [None, "ferry_transforms:identity"])
def test_hostile_identifiers(dbs: Databases, transform: str | None) -> None:
    for dsn in (dbs.source, dbs.target):
        execute(dsn, "CREATE TABLE y (a int)")
    execute(dbs.source, 'CREATE SCHEMA "Mixed ""Case""; --"')
    execute(
        dbs.source,
        'CREATE TABLE "Mixed ""Case""; --"."x""; DROP TABLE y; --" '
        '("we""ird; --" int, "Col A" text, "select" int)',
    )
    execute(
        dbs.source,
        'INSERT INTO "Mixed ""Case""; --"."x""; DROP TABLE y; --" '
        "SELECT g, 'v' || g, g FROM generate_series(1, 50) g",
    )
    execute(dbs.target, 'CREATE SCHEMA "Mixed ""Case""; --"')
    j = pgferry.Job(
        source={"dsn": dbs.source, "table": [HOSTILE_SCHEMA, HOSTILE_TABLE]},
        target={"dsn": dbs.target, "table": '"Mixed ""Case""; --"."x""; DROP TABLE y; --"'},
        transform=transform,
        batch_size=7,
    )
    assert pgferry.run(j).rows_written == 50
    assert (
        fetchval(
            dbs.target,
            'SELECT sum("we""ird; --") FROM "Mixed ""Case""; --"."x""; DROP TABLE y; --"',
        )
        == 1275
    )
    for dsn in (dbs.source, dbs.target):
        assert fetchval(dsn, "SELECT to_regclass('y') IS NOT NULL")


def test_replace_keeps_indexes_grants_comments_views(dbs: Databases) -> None:
    load_workload(dbs.source, 200)
    execute(
        dbs.target,
        """
        CREATE TABLE people (id bigint PRIMARY KEY, first_name text, last_name text, age int,
            email text UNIQUE, created_at timestamptz NOT NULL, score double precision,
            payload jsonb, CHECK (age > 0));
        CREATE INDEX people_last_name_idx ON people (last_name) WHERE age > 20;
        COMMENT ON TABLE people IS 'the people; it''s a table';
        COMMENT ON COLUMN people.age IS 'in years';
        CREATE ROLE pgferry_reader_test;
        GRANT SELECT ON people TO pgferry_reader_test;
        CREATE VIEW adults AS SELECT id, first_name FROM people WHERE age >= 18;
        INSERT INTO people (id, created_at, age) VALUES (-1, now(), 5);
    """,
    )
    try:
        before = fetch(
            dbs.target,
            "SELECT indexrelid::regclass::text FROM pg_index "
            "WHERE indrelid = 'people'::regclass ORDER BY 1",
        )
        j = job(dbs, transform="ferry_transforms:split_name", target={"mode": "replace"})
        result = pgferry.run(j)
        assert result.rows_written == 200
        assert fetchval(dbs.target, "SELECT count(*) FROM people") == 200
        assert fetchval(dbs.target, "SELECT count(*) FROM people WHERE id = -1") == 0
        after = fetch(
            dbs.target,
            "SELECT indexrelid::regclass::text FROM pg_index "
            "WHERE indrelid = 'people'::regclass ORDER BY 1",
        )
        assert after == before
        assert (
            fetchval(dbs.target, "SELECT obj_description('people'::regclass, 'pg_class')")
            == "the people; it's a table"
        )
        assert fetchval(dbs.target, "SELECT col_description('people'::regclass, 4)") == "in years"
        assert fetchval(
            dbs.target, "SELECT has_table_privilege('pgferry_reader_test', 'people', 'SELECT')"
        )
        assert fetchval(dbs.target, "SELECT count(*) FROM adults") == 200
        leftovers = fetchval(
            dbs.target, "SELECT count(*) FROM pg_class WHERE relname LIKE '_pgferry%'"
        )
        assert leftovers == 0
    finally:
        execute(
            dbs.target,
            "DROP VIEW IF EXISTS adults; DROP TABLE IF EXISTS people; "
            "DROP ROLE IF EXISTS pgferry_reader_test",
        )


@pytest.mark.slow
def test_replace_is_atomic_for_concurrent_readers(dbs: Databases) -> None:
    load_workload(dbs.source, 20_000)
    execute(dbs.target, "CREATE TABLE people AS SELECT * FROM generate_series(1, 1234) AS id")
    execute(dbs.target, "DROP TABLE people")
    pgferry.run(job(dbs, transform="ferry_transforms:split_name"))
    execute(dbs.target, "DELETE FROM people WHERE id > 1234")
    seen: set[int] = set()
    errors: list[BaseException] = []
    stop, swapped = threading.Event(), threading.Event()

    async def read() -> None:
        import asyncpg

        conn = await asyncpg.connect(dbs.target)
        try:
            while not stop.is_set():
                count = await conn.fetchval("SELECT count(*) FROM people")
                seen.add(count)
                if count == 20_000:
                    swapped.set()
        finally:
            await conn.close()

    def reader() -> None:
        try:
            asyncio.run(read())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        j = job(
            dbs, transform="ferry_transforms:split_name", target={"mode": "replace"}, batch_size=500
        )
        assert pgferry.run(j).rows_written == 20_000
        assert swapped.wait(60), "the reader never saw the new table"
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert seen == {1234, 20_000}


def test_replace_failure_leaves_target_untouched(dbs: Databases) -> None:
    load_workload(dbs.source, 100)
    pgferry.run(job(dbs))
    with pytest.raises(TransformError):
        pgferry.run(job(dbs, transform="ferry_transforms:fail_on_7", target={"mode": "replace"}))
    assert fetchval(dbs.target, "SELECT count(*) FROM people") == 100
    assert fetchval(dbs.target, "SELECT count(*) FROM pg_class WHERE relname LIKE '_pgferry%'") == 0


# --- Failures ----------------------------------------------------------------------------------


def test_missing_source_table(dbs: Databases) -> None:
    with pytest.raises(SchemaError, match=r"source table nope does not exist"):
        pgferry.run(job(dbs, source={"table": "nope"}))


def test_bad_dsn(dbs: Databases) -> None:
    with pytest.raises(ConfigError, match="invalid source DSN"):
        pgferry.run(job(dbs, source={"dsn": "postgresql://u:topsecret@localhost:notaport/x"}))


def test_refused_connection_names_host_and_masks_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dsn = f"postgresql://bob:topsecret@127.0.0.1:{port}/db"
    # No retries: a refused connection is transient, and the backoff would only add waits.
    j = pgferry.Job(
        source={"dsn": dsn, "table": "t"}, target={"dsn": dsn, "table": "t"}, max_retries=0
    )
    with pytest.raises(ConnectError) as info:
        pgferry.run(j)
    assert isinstance(info.value, Transient)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "topsecret" not in str(info.value)
    assert "topsecret" not in str(info.value.result.error)  # type: ignore[attr-defined]


def test_unresponsive_host_fails_within_the_connect_timeout() -> None:
    # A listener that accepts and never answers stands in for an unreachable host.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        dsn = f"postgresql://u@127.0.0.1:{port}/db"
        # No retries: a connect timeout is transient and would otherwise be retried.
        j = pgferry.Job(
            source={"dsn": dsn, "table": "t"},
            target={"dsn": dsn, "table": "t"},
            connect_timeout=1,
            max_retries=0,
        )
        start = time.monotonic()
        with pytest.raises(ConnectError, match="no answer within 1 s"):
            pgferry.run(j)
        assert time.monotonic() - start < 5
    finally:
        listener.close()


def test_transform_import_errors(dbs: Databases) -> None:
    load_workload(dbs.source, 10)
    for path, message in [
        ("no_such_module_xyz:f", "cannot import transform module 'no_such_module_xyz'"),
        ("ferry_transforms:nope", "has no attribute 'nope'"),
        ("ferry_transforms:not_callable", "is a int, not callable"),
    ]:
        with pytest.raises(ConfigError, match=message):
            pgferry.run(job(dbs, transform=path))


@pytest.mark.parametrize("workers", [0, 2])
def test_transform_raising_names_batch_and_row(dbs: Databases, workers: int) -> None:
    load_workload(dbs.source, 20)
    with pytest.raises(TransformError) as info:
        pgferry.run(job(dbs, transform="ferry_transforms:fail_on_7", batch_size=5, workers=workers))
    text = str(info.value)
    assert "seven is not allowed" in text
    assert "id=7" in text
    assert info.value.batch == 1
    assert info.value.job == "people"
    # Batches before the failing one were committed and are kept.
    assert fetchval(dbs.target, "SELECT count(*) FROM people") == 5


def test_incompatible_existing_column_fails_before_any_row(dbs: Databases) -> None:
    load_workload(dbs.source, 10)
    execute(
        dbs.target,
        "CREATE TABLE people (id bigint, name int, age int, email text, "
        "created_at timestamptz, score float8, payload jsonb)",
    )
    for transform in (None, "ferry_transforms:identity"):
        with pytest.raises(SchemaError) as info:
            pgferry.run(job(dbs, transform=transform))
        assert info.value.column == "name"
        # integer cannot hold text: evolving the target would need a rewrite.
        assert "'name' from integer to text needs a rewrite" in str(info.value)
    assert fetchval(dbs.target, "SELECT count(*) FROM people") == 0


def test_missing_column_in_existing_target(dbs: Databases) -> None:
    load_workload(dbs.source, 10)
    execute(dbs.target, "CREATE TABLE people (id bigint)")
    # With schema_changes: freeze a missing column is an error (evolve adds it: see
    # tests/integration/test_schema_evolution.py).
    with pytest.raises(SchemaError, match="'freeze': new column 'name' text"):
        pgferry.run(job(dbs, target={"schema_changes": "freeze"}))


def test_target_refusing_a_value_names_column_and_batch(dbs: Databases) -> None:
    load_workload(dbs.source, 30)
    execute(
        dbs.target,
        "CREATE TABLE people (id bigint, name varchar(3), age int, email text, "
        "created_at timestamptz, score float8, payload jsonb)",
    )
    # discard: the target stays varchar(3) (evolve would widen it to the source's text).
    with pytest.raises(pgferry.LoadError) as info:
        pgferry.run(
            job(
                dbs,
                transform="ferry_transforms:identity",
                batch_size=10,
                target={"schema_changes": "discard"},
            )
        )
    assert info.value.column == "name"
    assert info.value.batch == 0
    assert "people" in str(info.value)


# --- Cancellation ---------------------------------------------------------------------------------


def pgferry_connections(dsn: str) -> int:
    return fetchval(
        dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgferry:%'"
    )


@pytest.mark.parametrize("workers", [0, 1])
async def test_cancellation_closes_connections_and_commits_whole_batches(
    dbs: Databases, workers: int
) -> None:
    load_workload(dbs.source, 20_000)
    j = job(dbs, transform="ferry_transforms:slow_identity", batch_size=100, workers=workers)
    committed = asyncio.Event()

    def on_progress(p: pgferry.Progress) -> None:
        if p.rows_written >= 500:
            committed.set()

    task = asyncio.create_task(pgferry.run_async(j, on_progress=on_progress))
    await asyncio.wait_for(committed.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):
        if await asyncio.to_thread(pgferry_connections, dbs.target) == 0:
            break
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(pgferry_connections, dbs.target) == 0
    assert await asyncio.to_thread(pgferry_connections, dbs.source) == 0
    written = await asyncio.to_thread(fetchval, dbs.target, "SELECT count(*) FROM people")
    assert 0 < written < 20_000
    assert written % 100 == 0, "a batch was half-committed"


def test_value_of_the_wrong_python_type_names_column_and_row(dbs: Databases) -> None:
    load_workload(dbs.source, 30)
    execute(
        dbs.target,
        "CREATE TABLE people (id bigint, name text, age int, email text, "
        "created_at timestamptz, score float8, payload jsonb)",
    )
    with pytest.raises(pgferry.LoadError) as info:
        pgferry.run(job(dbs, transform="ferry_transforms:age_as_text", batch_size=10))
    assert info.value.column == "age"
    assert info.value.batch == 0
    assert "people refused column 'age' of the row with id=1" in str(info.value)
    assert "19 years" not in str(info.value)  # row values stay out of messages and logs
    assert fetchval(dbs.target, "SELECT count(*) FROM people") == 0


def _run_in_daemon(source: str, queue: object) -> None:
    import logging

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logging.getLogger("pgferry").addHandler(Keep())
    j = pgferry.Job.from_dict(
        {
            "source": {"dsn": source, "table": "bench_src"},
            "target": {"dsn": source, "table": "people"},
            "transform": "ferry_transforms:split_name",
            "workers": 2,
        }
    )
    result = pgferry.run(j)
    queue.put((result.workers, result.rows_written, records))  # type: ignore[attr-defined]


def test_pool_falls_back_inline_in_a_daemonic_process(dbs: Databases) -> None:
    import multiprocessing

    load_workload(dbs.source, 1_000)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run_in_daemon, args=(dbs.source, queue), daemon=True)
    proc.start()
    workers, rows, records = queue.get(timeout=120)
    proc.join(30)
    assert (workers, rows) == (0, 1_000)
    assert any("running the transform inline" in r and "daemonic" in r for r in records)
    assert differences(dbs.source) == 0
