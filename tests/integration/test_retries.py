"""Transient failures mid-run: the run retries and resumes from the last committed batch."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

import pgferry
from helpers import Databases, execute, fetch, fetchval, load_workload


def terminate_when(
    dsn: str, database: str, condition: str, stop: threading.Event, killed: list[int]
) -> None:
    """Terminate pgferry's backends on ``database`` matching ``condition`` once, mid-run."""
    while not stop.is_set():
        pids = fetch(
            dsn,
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name "
            f"LIKE 'pgferry:%' AND {condition}",
            database,
        )
        if pids:
            for (pid,) in pids:
                fetchval(dsn, "SELECT pg_terminate_backend($1)", pid)
                killed.append(pid)
            return
        time.sleep(0.01)


@contextlib.contextmanager
def terminating_after_batches(
    target: str, server: str, database: str, condition: str, *, job: str = "retry", batches: int = 3
) -> Iterator[list[int]]:
    """While the body runs: once ``job`` has committed ``batches`` batches (so that the retry
    resumes after them), terminate the backends on ``database`` matching ``condition`` once.
    Yields the list of terminated pids."""
    stop = threading.Event()
    killed: list[int] = []
    query = "SELECT coalesce(sum(batches), 0) FROM pgferry.ledger WHERE job = $1"

    def watcher() -> None:
        while not stop.is_set():
            ledger = fetchval(target, "SELECT to_regclass('pgferry.ledger') IS NOT NULL")
            if ledger and fetchval(target, query, job) >= batches:
                break
            time.sleep(0.02)
        terminate_when(server, database, condition, stop, killed)

    thread = threading.Thread(target=watcher)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("side", "condition"),
    [
        ("target", "application_name LIKE '%:loader'"),  # the loader, between or in batches
        ("source", "application_name LIKE '%:reader'"),  # the reader
    ],
)
@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_terminated_backend_is_retried_without_duplicates(
    dbs: Databases, pg_server_dsn: str, side: str, condition: str, mode: str
) -> None:
    load_workload(dbs.source, 10_000)
    execute(dbs.source, "ANALYZE bench_src")
    j = pgferry.Job.from_dict(
        {
            "name": "retry",
            "source": {"dsn": dbs.source, "table": "bench_src", "key": "id"},
            "target": {"dsn": dbs.target, "table": "people", "mode": mode, "key": "id"},
            "transform": "ferry_transforms:slow_identity",
            "batch_size": 200,
            "workers": 0,
            "retry_backoff": 0.1,
            "incremental": {"column": "created_at"} if mode == "upsert" else None,
        }
    )
    # Let some batches commit first, so that the retry has something to resume after.
    database = (dbs.source if side == "source" else dbs.target).rsplit("/", 1)[1]
    with terminating_after_batches(dbs.target, pg_server_dsn, database, condition) as killed:
        result = pgferry.run(j)
    assert killed, "the test did not manage to terminate a backend mid-run"
    assert result.attempts >= 2
    assert result.rows_written == 10_000
    assert fetchval(dbs.target, "SELECT count(*) FROM people") == 10_000
    assert fetchval(dbs.target, "SELECT count(DISTINCT id) FROM people") == 10_000
    src = fetchval(dbs.source, "SELECT sum(hashtext(b::text)) FROM bench_src b")
    dst = fetchval(dbs.target, "SELECT sum(hashtext(b::text)) FROM people b")
    assert src == dst
    run = fetch(dbs.target, "SELECT status, attempts FROM pgferry.runs WHERE job = 'retry'")
    assert [tuple(r) for r in run] == [("success", result.attempts)]


def test_terminal_error_is_not_retried(dbs: Databases) -> None:
    load_workload(dbs.source, 100)
    execute(dbs.target, "CREATE TABLE people (id bigint)")
    j = pgferry.Job.from_dict(
        {
            "source": {"dsn": dbs.source, "table": "bench_src"},
            # freeze: the missing columns are an error (evolve would add them).
            "target": {"dsn": dbs.target, "table": "people", "schema_changes": "freeze"},
            "retry_backoff": 0.1,
        }
    )
    start = time.monotonic()
    with pytest.raises(pgferry.SchemaError) as info:
        pgferry.run(j)
    assert time.monotonic() - start < 5
    assert info.value.result.attempts == 1  # type: ignore[attr-defined]
