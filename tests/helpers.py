"""Small synchronous database helpers for tests (``from helpers import execute, fetch``).

Each call opens its own asyncpg connection and closes it: slow, but simple and independent of any
event loop. Called from inside a running loop (an ``async def`` test) they run in a worker thread;
async tests are better off awaiting asyncpg directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import subprocess
import sys
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")


@dataclass(frozen=True)
class Databases:
    """The two fresh databases of the ``dbs`` fixture."""

    source: str
    target: str


def _run(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_fn())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro_fn()).result()


def _with_connection(dsn: str, use: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def go() -> T:
        conn = await asyncpg.connect(dsn, timeout=30)
        try:
            return await use(conn)
        finally:
            await conn.close()

    return _run(go)


def execute(dsn: str, sql: str, *args: Any) -> str:
    """Run a statement (several, without ``args``); return the status, e.g. ``'INSERT 0 3'``."""
    status: str = _with_connection(dsn, lambda conn: conn.execute(sql, *args))
    return status


def execute_each(dsn: str, statements: Sequence[str]) -> None:
    """Run statements one at a time on one connection (``CREATE DATABASE`` and ``DROP DATABASE``
    refuse to share a transaction, so they cannot go in one ``execute``)."""

    async def each(conn: asyncpg.Connection) -> None:
        for statement in statements:
            await conn.execute(statement)

    _with_connection(dsn, each)


def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Return all rows of a query."""
    return _with_connection(dsn, lambda conn: conn.fetch(sql, *args))


def fetchval(dsn: str, sql: str, *args: Any) -> Any:
    """Return the first column of the first row of a query (``None`` when there is no row)."""
    return _with_connection(dsn, lambda conn: conn.fetchval(sql, *args))


def dsn_with_database(dsn: str, database: str) -> str:
    """Return ``dsn`` (a ``postgresql://`` URL) pointing at another database of the same server."""
    parts = urllib.parse.urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("expected a DSN of the form postgresql://user@host:port/database")
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(database, safe="")))


def load_workload(dsn: str, rows: int) -> None:
    """Create the standard workload (``bench_src``, ``bench_expected``) with ``rows`` rows."""
    from pgferry.demo import workload_statements

    for statement in workload_statements(rows):
        execute(dsn, statement)


def differences(dsn: str, target: str = "people", expected: str = "bench_expected") -> int:
    """Rows in one table but not the other (EXCEPT ALL both ways, counting duplicates)."""
    value: int = fetchval(
        dsn,
        f"SELECT (SELECT count(*) FROM (SELECT * FROM {target} EXCEPT ALL "
        f"SELECT * FROM {expected}) a) + (SELECT count(*) FROM (SELECT * FROM {expected} "
        f"EXCEPT ALL SELECT * FROM {target}) b)",
    )
    return value


def job_with(defaults: dict[str, Any], **changes: Any) -> Any:
    """``pgferry.Job`` from ``defaults``, with ``source``/``target`` changes merged key by key."""
    import pgferry

    data = dict(defaults)
    for k, v in changes.items():
        data[k] = {**data[k], **v} if k in ("source", "target") else v
    return pgferry.Job.from_dict(data)


def child_peak_rss(script: str, *args: str) -> tuple[int, float]:
    """Run ``script`` in a fresh Python with ``args``; it prints ``{"rows", "peak_mib"}``."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    out = json.loads(proc.stdout)
    return out["rows"], out["peak_mib"]


def assert_peak_rss_flat(dbs: Databases, script: str, transform: str) -> None:
    """Load 40k and 160k rows of the standard workload, move each in a fresh process running
    ``script`` (args: source, target, table, transform), and assert that 4x the rows keep peak
    RSS within 10 % (+4 MiB) of 1x: memory is bounded by the knobs, not by the table."""
    from pgferry.demo import workload_statements

    for rows, table in ((40_000, "small"), (160_000, "large")):
        for statement in workload_statements(rows):
            execute(dbs.source, statement)
        execute(dbs.source, f"ALTER TABLE bench_src RENAME TO {table}")
        execute(dbs.source, "DROP VIEW bench_expected")
    small_rows, small = child_peak_rss(script, dbs.source, dbs.target, "small", transform)
    large_rows, large = child_peak_rss(script, dbs.source, dbs.target, "large", transform)
    assert (small_rows, large_rows) == (40_000, 160_000)
    print(f"peak RSS {transform or 'pipe'}: {small:.1f} MiB for 1x, {large:.1f} MiB for 4x")
    assert large <= small * 1.10 + 4, f"peak RSS {small:.1f} MiB for 1x, {large:.1f} MiB for 4x"
