"""Schema changes and locks (#11 §4): readers wait seconds at most, blockers are named, a kill
during evolution leaves each change done or not done.

The latency test prints its figures (``pytest -s``, lines starting ``lock figures:``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

import pgferry
from helpers import Databases, execute, fetch, fetchval
from pgferry.errors import SchemaLockError

ROWS = 20_000
LOCK_TIMEOUT = 0.5

SOURCE = f"""
CREATE TABLE drift (id int PRIMARY KEY, a varchar(10), n numeric(10,2), i int, d text NOT NULL);
INSERT INTO drift SELECT g, 'a', 1.5, g, 'd' FROM generate_series(1, {ROWS}) g;
"""

CHANGES = {
    "add column": "ALTER TABLE drift ADD COLUMN b numeric(10,2)",
    "widen varchar": "ALTER TABLE drift ALTER COLUMN a TYPE varchar(20)",
    "widen numeric": "ALTER TABLE drift ALTER COLUMN n TYPE numeric(14,2)",
    "drop not null": "ALTER TABLE drift DROP COLUMN d",
    "rewrite int to bigint": "ALTER TABLE drift ALTER COLUMN i TYPE bigint",
}


def job(dbs: Databases, **target: object) -> pgferry.Job:
    return pgferry.Job.from_dict(
        {
            "source": {"dsn": dbs.source, "table": "drift"},
            "target": {
                "dsn": dbs.target,
                "table": "drift",
                "mode": "upsert",
                "lock_timeout": LOCK_TIMEOUT,
                "allow_rewrite": True,
                **target,
            },
            "max_retries": 0,
            "swap_retries": 8,
        }
    )


@dataclass
class Traffic:
    """A reader (SELECT every 20 ms) and a writer (INSERT every 20 ms) in a thread of their own."""

    dsn: str
    reads: list[float] = field(default_factory=list)
    writes: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()
        assert self.started.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.errors, self.errors

    async def _loop(self, conn: asyncpg.Connection, statement: str, out: list[float]) -> None:
        next_id = 10_000_000 + len(out)
        while not self.stop.is_set():
            t0 = time.perf_counter()
            if statement.startswith("INSERT"):
                next_id += 1
                await conn.execute(statement, next_id)
            else:
                await conn.fetchval(statement)
            out.append(time.perf_counter() - t0)
            await asyncio.sleep(0.02)

    async def _main(self) -> None:
        try:
            reader = await asyncpg.connect(self.dsn, server_settings={"application_name": "r"})
            writer = await asyncpg.connect(self.dsn, server_settings={"application_name": "w"})
            self.started.set()
            await asyncio.gather(
                self._loop(reader, "SELECT count(*) FROM drift", self.reads),
                self._loop(writer, "INSERT INTO drift (id, d) VALUES ($1, 'w')", self.writes),
            )
            await reader.close()
            await writer.close()
        except BaseException as exc:
            self.errors.append(exc)
            self.started.set()


class Blocker:
    """Another session holding a lock on ``drift`` in an open transaction, in its own thread."""

    def __init__(self, dsn: str, app: str = "blocker-app") -> None:
        self.dsn, self.app = dsn, app
        self.pid = 0
        self.release = threading.Event()
        self.ready = threading.Event()
        self.outcome: BaseException | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Blocker:
        self.thread.start()
        assert self.ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(30)

    async def _main(self) -> None:
        conn = await asyncpg.connect(self.dsn, server_settings={"application_name": self.app})
        try:
            self.pid = conn.get_server_pid()
            tx = conn.transaction()
            await tx.start()
            await conn.fetchval("SELECT count(*) FROM drift")  # ACCESS SHARE until the end
            self.ready.set()
            while not self.release.is_set():
                await asyncio.sleep(0.02)
                await conn.fetchval("SELECT 1")  # notices a termination
            await tx.commit()
        except BaseException as exc:
            self.outcome = exc
            self.ready.set()
        finally:
            await conn.close()


def waits_seen(dsn: str, until: int, run: threading.Thread) -> int:
    """Watch the loader wait for its lock until ``until`` separate attempts were seen."""
    starts: set[object] = set()
    while len(starts) < until and run.is_alive():
        rows = fetch(
            dsn,
            "SELECT query_start FROM pg_stat_activity WHERE application_name LIKE "
            "'pgferry:%:loader' AND wait_event_type = 'Lock'",
        )
        starts.update(r[0] for r in rows)
    return len(starts)


FIGURES: dict[str, tuple[float, float, int]] = {}


@pytest.mark.slow
@pytest.mark.parametrize("case", [*CHANGES, "add column, blocked for seconds"])
def test_readers_wait_at_most_twice_the_lock_timeout(dbs: Databases, case: str) -> None:
    execute(dbs.source, SOURCE)
    j = job(dbs)
    assert pgferry.run(j).rows_written == ROWS
    execute(dbs.source, CHANGES.get(case, CHANGES["add column"]))
    outcome: list[pgferry.RunResult | BaseException] = []

    def run() -> None:
        try:
            outcome.append(pgferry.run(j))
        except BaseException as exc:
            outcome.append(exc)

    runner = threading.Thread(target=run)
    with Traffic(dbs.target) as traffic:
        # Let the traffic reach a steady state first: a few reads before the change starts.
        while len(traffic.reads) < 5:
            time.sleep(0.01)
        if case.endswith("blocked for seconds"):
            with Blocker(dbs.target):
                runner.start()
                # Hold the lock over three attempts of the change (about 2-4 s).
                assert waits_seen(dbs.target, 3, runner) == 3
        else:
            runner.start()
        runner.join(120)
        reads_during = len(traffic.reads)
        while len(traffic.reads) < reads_during + 5:  # and a few reads after it
            time.sleep(0.01)
    result = outcome[0]
    assert isinstance(result, pgferry.RunResult), result
    assert result.schema_changes, result
    worst_read, worst_write = max(traffic.reads), max(traffic.writes)
    FIGURES[case] = (worst_read, worst_write, len(traffic.reads))
    print(
        f"\nlock figures: {case:32s} reader worst {worst_read * 1000:7.1f} ms, writer worst "
        f"{worst_write * 1000:7.1f} ms, {len(traffic.reads)} reads, {len(traffic.writes)} writes,"
        f" lock_timeout {LOCK_TIMEOUT * 1000:.0f} ms"
    )
    assert worst_read < 2 * LOCK_TIMEOUT + 1.0


def test_a_blocked_change_names_its_blocker(dbs: Databases) -> None:
    execute(dbs.source, SOURCE)
    j = job(dbs, lock_timeout="200ms").with_overrides(swap_retries=2)
    pgferry.run(j)
    execute(dbs.source, CHANGES["add column"])
    with Blocker(dbs.target) as blocker, pytest.raises(SchemaLockError) as caught:
        pgferry.run(j)
    message = str(caught.value)
    assert f"pid {blocker.pid} (application_name 'blocker-app', transaction open " in message
    assert "lock not granted within 0.2 s in 2 attempts" in message
    assert [b[0] for b in caught.value.blockers] == [blocker.pid]
    assert "b" not in {r[0] for r in fetch(dbs.target, "SELECT attname FROM pg_attribute "
                                           "WHERE attrelid = 'drift'::regclass")}  # fmt: skip
    # Nothing half-done: the next run, unblocked, makes the change.
    assert [c["column"] for c in pgferry.run(j).schema_changes] == ["b"]


@pytest.mark.slow
def test_blockers_are_terminated_only_when_asked(dbs: Databases) -> None:
    execute(dbs.source, SOURCE)
    j = job(dbs, lock_timeout="200ms", terminate_blockers_after="1s")
    pgferry.run(j)
    execute(dbs.source, CHANGES["add column"])
    with Blocker(dbs.target, app="terminate-me") as blocker:
        result = pgferry.run(j)
        blocker.thread.join(30)
        # Its connection was closed under it, and its backend is gone.
        assert blocker.outcome is not None
        assert "closed" in str(blocker.outcome)
        alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
        assert fetchval(dbs.target, alive, blocker.pid) == 0
    assert [c["column"] for c in result.schema_changes] == ["b"]


def loader_waits(dsn: str) -> bool:
    """Whether pgferry's loader is waiting for a lock now."""
    found = fetchval(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgferry:%:loader' "
        "AND wait_event_type = 'Lock'",
    )
    return bool(found)


def session_waits(dsn: str, app: str) -> bool:
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
        "AND wait_event_type = 'Lock'"
    )
    return bool(fetchval(dsn, query, app))


@pytest.mark.slow
def test_kill_during_evolution_leaves_each_change_whole(dbs: Databases, tmp_path: Path) -> None:
    """SIGKILL ``pgferry run`` while its second change waits for a lock: the first change is
    in, the second is not, no row moved; the next run finishes the job.

    The second change is held up without a race: a second session queues for the table behind
    the first change, so it is granted the lock as the first change commits.
    """
    execute(dbs.source, SOURCE)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        f"source: {{dsn: '{dbs.source}', table: drift}}\n"
        f"target: {{dsn: '{dbs.target}', table: drift, mode: upsert, lock_timeout: 60s}}\n"
        "max_retries: 0\n"
    )
    command = [sys.executable, "-m", "pgferry", "run", str(job_file), "--quiet"]
    assert subprocess.run(command, timeout=120).returncode == 0
    # Two changes: the new column first, then the widening (its view dropped and created again).
    execute(dbs.target, "CREATE VIEW drift_v AS SELECT id, a FROM drift")
    execute(dbs.source, "ALTER TABLE drift ALTER COLUMN a TYPE varchar(20), ADD COLUMN b int;"
                        "UPDATE drift SET a = repeat('x', 20), b = 1")  # fmt: skip
    second = Blocker(dbs.target, app="second-blocker")
    proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        with Blocker(dbs.target, app="first-blocker"):
            while not loader_waits(dbs.target):  # the new column waits for first-blocker
                assert proc.poll() is None
            second.thread.start()  # queues behind the new column
            while not session_waits(dbs.target, "second-blocker"):
                assert proc.poll() is None
        # first-blocker is gone: the new column is made, then second-blocker has the lock.
        assert second.ready.wait(30)
        while not loader_waits(dbs.target):  # the widening waits for second-blocker
            assert proc.poll() is None
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        second.release.set()
        second.thread.join(30)
    types = dict(fetch(dbs.target, "SELECT attname, format_type(atttypid, atttypmod) "
                                   "FROM pg_attribute WHERE attrelid = 'drift'::regclass "
                                   "AND attnum > 0 AND NOT attisdropped"))  # fmt: skip
    # The first change is whole, the second not made; no row moved, the view is intact.
    assert types["b"] == "integer"
    assert types["a"] == "character varying(10)"
    assert fetchval(dbs.target, "SELECT count(*) FROM drift WHERE b IS NOT NULL") == 0
    assert fetchval(dbs.target, "SELECT count(*) FROM drift_v") == ROWS
    assert subprocess.run(command, timeout=120).returncode == 0
    done = "SELECT count(*) FROM drift WHERE a = repeat('x', 20) AND b = 1"
    assert fetchval(dbs.target, done) == ROWS
    assert fetchval(dbs.target, "SELECT count(*) FROM drift_v") == ROWS
