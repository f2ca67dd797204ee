"""HTTP targets share the run machinery of PostgreSQL targets: partitions, lock, run retries."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import asyncpg
import pytest

import pgferry
from helpers import Databases, execute, fetch, fetchval
from httpserver import ApiServer
from pgferry import locks

ROWS = 3_000


def setup(dbs: Databases) -> None:
    execute(dbs.source, f"CREATE TABLE src AS SELECT g::bigint AS id, 'n' || g AS name "
                        f"FROM generate_series(1, {ROWS}) g")  # fmt: skip


def job(dbs: Databases, url: str, **extra: Any) -> pgferry.Job:
    return pgferry.Job.from_dict(
        {
            "name": "api",
            "source": {"dsn": dbs.source, "table": "src", "key": "id"},
            "target": {"http": {"url": url, "rows_per_request": 50}},
            "state": {"dsn": dbs.target},
            "batch_size": 200,
            "retry_backoff": 0.01,
            "workers": 0,
            **extra,
        }
    )


def test_partitions_send_their_slices_under_their_own_ledger_rows(dbs: Databases) -> None:
    setup(dbs)
    with ApiServer() as api:
        for name, lower, upper in (("low", None, 1_001), ("high", 1_001, None)):
            part = {"name": name, "column": "id", "lower": lower, "upper": upper}
            result = pgferry.run(job(dbs, api.url, partition=part))
            assert result.partition == name
    assert sorted(api.rows) == list(range(1, ROWS + 1)) and api.duplicates == 0
    ledger = fetch(dbs.target, "SELECT partition, rows_written FROM pgferry.ledger ORDER BY 1")
    assert [tuple(r) for r in ledger] == [("high", 2_000), ("low", 1_000)]


def test_another_run_of_the_job_holds_the_lock(dbs: Databases) -> None:
    setup(dbs)

    async def hold_and_run() -> None:
        holder = await asyncpg.connect(dbs.target)
        try:
            await locks.take_run_lock(holder, "api", "", 1)
            with pytest.raises(pgferry.ConcurrentRunError):
                await pgferry.run_async(job(dbs, "http://127.0.0.1:9/x", lock_wait=0.2))
        finally:
            await holder.close()

    # The lock lives in the state database, which pgferry sets up on first use.
    empty = {"dsn": dbs.source, "query": "SELECT 1::bigint AS id WHERE false", "key": "id"}
    pgferry.run(job(dbs, "http://127.0.0.1:9/x").with_overrides(source=empty))
    asyncio.run(hold_and_run())


def test_a_lost_state_connection_is_retried_and_resumes(dbs: Databases) -> None:
    setup(dbs)
    with ApiServer(latency=0.005) as api:
        halfway = api.when(lambda: len(api.rows) >= ROWS // 2)

        def cut() -> None:
            halfway.wait(60)
            execute(
                dbs.target,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'pgferry:api:%'",
            )

        killer = threading.Thread(target=cut)
        killer.start()
        result = pgferry.run(job(dbs, api.url))
        killer.join()
    assert result.status == "success" and result.attempts >= 2
    assert sorted(api.rows) == list(range(1, ROWS + 1))
    # The retry resent the requests since the last committed batch under the same keys.
    assert api.duplicates == 0
    assert all(len(keys) == 1 for keys in api.keys_of.values())
    assert fetchval(dbs.target, "SELECT status FROM pgferry.runs") == "success"
