"""Transient failures mid-run: the run retries and resumes from the last committed batch."""

from __future__ import annotations

import threading
import time

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
    stop = threading.Event()
    killed: list[int] = []

    def watcher() -> None:
        while not stop.is_set():
            done = (
                fetchval(
                    dbs.target,
                    "SELECT coalesce(sum(batches), 0) FROM pgferry.ledger WHERE job = 'retry'",
                )
                if fetchval(dbs.target, "SELECT to_regclass('pgferry.ledger') IS NOT NULL")
                else 0
            )
            if done >= 3:
                break
            time.sleep(0.02)
        terminate_when(pg_server_dsn, database, condition, stop, killed)

    thread = threading.Thread(target=watcher)
    thread.start()
    try:
        result = pgferry.run(j)
    finally:
        stop.set()
        thread.join()
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
