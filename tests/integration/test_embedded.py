"""The embedded PostgreSQL server and the shared database fixtures."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import asyncpg
import psutil
import pytest

from helpers import Databases, execute, fetch, fetchval
from pgferry.embedded import EmbeddedPostgres
from pgferry.errors import ConfigError, EmbeddedPostgresError


def _live_processes(pids: list[int], directory: Path) -> list[psutil.Process]:
    """Processes among ``pids``, or mentioning ``directory``, that still run (zombies are dead)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if proc.info["pid"] in pids or str(directory) in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def test_session_server_answers(pg_server_dsn: str) -> None:
    version = fetchval(pg_server_dsn, "SELECT version()")
    assert version.startswith("PostgreSQL ")
    if not os.environ.get("PGFERRY_TEST_DSN"):
        assert int(fetchval(pg_server_dsn, "SHOW server_version_num")) // 10000 == 18
        assert fetchval(pg_server_dsn, "SHOW fsync") == "off"  # the tests run with fast=True
        assert fetchval(pg_server_dsn, "SHOW max_connections") == "200"


def test_dbs_gives_two_distinct_empty_databases(dbs: Databases) -> None:
    assert dbs.source != dbs.target
    source_name = fetchval(dbs.source, "SELECT current_database()")
    target_name = fetchval(dbs.target, "SELECT current_database()")
    assert source_name != target_name
    assert source_name.startswith("t_") and source_name.endswith("_src")
    assert target_name == source_name.removesuffix("_src") + "_tgt"

    execute(dbs.source, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
    assert execute(dbs.source, "INSERT INTO t VALUES ($1)", 3) == "INSERT 0 1"
    assert [r["id"] for r in fetch(dbs.source, "SELECT id FROM t ORDER BY id")] == [1, 2, 3]
    assert fetchval(dbs.target, "SELECT to_regclass('public.t')") is None


async def test_helpers_work_inside_a_running_event_loop(dbs: Databases) -> None:
    assert fetchval(dbs.target, "SELECT $1::int + 1", 41) == 42


@pytest.mark.slow
def test_start_and_stop_leave_nothing_behind() -> None:
    pg = EmbeddedPostgres()
    assert pg.directory is None
    pg.start()
    directory = pg.directory
    assert directory is not None and directory.name.startswith("pgferry-pg-")
    assert pg.dsn == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    postmaster = int((directory / "data" / "postmaster.pid").read_text().split()[0])
    pids = [postmaster, *(p.pid for p in psutil.Process(postmaster).children(recursive=True))]
    assert len(pids) > 1  # checkpointer, walwriter, ... are running too

    # Default durability (the benchmark relies on it), and a client still connected at stop().
    loop = asyncio.new_event_loop()
    try:
        conn = loop.run_until_complete(asyncpg.connect(pg.dsn))
        assert loop.run_until_complete(conn.fetchval("SHOW fsync")) == "on"
        pg.stop()
        conn.terminate()
    finally:
        loop.close()

    assert not directory.exists()
    assert _live_processes(pids, directory) == []
    with pytest.raises(EmbeddedPostgresError):
        _ = pg.dsn


@pytest.mark.slow
def test_stop_is_idempotent() -> None:
    pg = EmbeddedPostgres(fast=True)
    pg.stop()  # never started: nothing to do
    with pg:
        directory = pg.directory
        assert fetchval(pg.dsn, "SELECT 1") == 1
        pg.stop()
        pg.stop()
    pg.stop()
    assert directory is not None and not directory.exists()
    assert pg.directory is None


@pytest.mark.slow
def test_stop_cleans_up_after_a_crashed_server() -> None:
    pg = EmbeddedPostgres(fast=True).start()
    directory = pg.directory
    assert directory is not None
    postmaster = int((directory / "data" / "postmaster.pid").read_text().split()[0])
    os.killpg(postmaster, signal.SIGKILL)  # postmaster.pid stays behind, stale
    started = time.monotonic()
    pg.stop()
    assert time.monotonic() - started < 10
    assert not directory.exists()
    assert _live_processes([postmaster], directory) == []


@pytest.mark.slow
def test_keyboard_interrupt_in_with_block_stops_the_server() -> None:
    with pytest.raises(KeyboardInterrupt), EmbeddedPostgres(fast=True) as pg:
        directory = pg.directory
        raise KeyboardInterrupt
    assert directory is not None and not directory.exists()
    assert _live_processes([], directory) == []


@pytest.mark.slow
def test_create_database_quotes_weird_names() -> None:
    weird = 'we"ird; DROP DATABASE postgres; -- é/?%'
    with EmbeddedPostgres(fast=True) as pg:
        dsn = pg.create_database(weird)
        assert fetchval(dsn, "SELECT current_database()") == weird
        assert fetchval(pg.dsn, "SELECT count(*) FROM pg_database WHERE datname = 'postgres'") == 1
        with pytest.raises(ConfigError):
            pg.create_database("x" * 64)  # PostgreSQL would silently truncate it


@pytest.mark.slow
def test_start_failure_raises_with_the_server_log(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(settings={"shared_buffers": "not-a-size"}, base_dir=tmp_path)
    with pytest.raises(EmbeddedPostgresError, match="shared_buffers"):
        pg.start()
    assert pg.directory is None
    assert list(tmp_path.iterdir()) == []
