"""What the benchmark parent does on the server: build the workload, reset and check the target.

Each helper opens its own short connection and closes it before returning, so that no
connection of the parent is open while a method runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from benchmarks.workload import EXPECTED_VIEW, SOURCE_TABLE, TARGET_TABLE

__all__ = [
    "Verification",
    "create_workload",
    "drop_all",
    "reset_target",
    "server_facts",
    "target_columns",
    "verify",
]

# Server settings shown in the report: the reference figures are on defaults.
_SETTINGS = (
    "shared_buffers",
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "max_wal_size",
    "work_mem",
)


@contextlib.asynccontextmanager
async def _connect(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "pgferry-bench"})
    try:
        yield conn
    finally:
        await conn.close()


async def create_workload(dsn: str, statements: list[str]) -> None:
    """Run the workload statements one by one (``VACUUM`` cannot run in a transaction).

    Whatever an earlier benchmark left in the database goes first: the workload's own
    ``DROP TABLE bench_src`` fails while the view ``bench_expected`` depends on it.
    """
    await drop_all(dsn)
    async with _connect(dsn) as conn:
        for statement in statements:
            await conn.execute(statement)


async def drop_all(dsn: str) -> None:
    """Drop the benchmark's tables and view."""
    async with _connect(dsn) as conn:
        await conn.execute(f"DROP TABLE IF EXISTS {TARGET_TABLE}")
        await conn.execute(f"DROP VIEW IF EXISTS {EXPECTED_VIEW}")
        await conn.execute(f"DROP TABLE IF EXISTS {SOURCE_TABLE}")


async def target_columns(dsn: str) -> list[str]:
    """The columns of ``bench_expected``, in order: what every method writes."""
    async with _connect(dsn) as conn:
        stmt = await conn.prepare(f"SELECT * FROM {EXPECTED_VIEW} LIMIT 0")  # noqa: S608
        return [attr.name for attr in stmt.get_attributes()]


async def reset_target(dsn: str) -> None:
    """Recreate ``bench_dst`` empty (same columns as ``bench_expected``, no constraints).

    A ``CHECKPOINT`` follows, so that the previous method's dirty pages are not written out on
    the next method's time; without the privilege for it, the checkpoint is skipped.
    """
    async with _connect(dsn) as conn:
        await conn.execute(f"DROP TABLE IF EXISTS {TARGET_TABLE}")
        await conn.execute(f"CREATE TABLE {TARGET_TABLE} (LIKE {EXPECTED_VIEW})")
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")


@dataclass(frozen=True)
class Verification:
    """The target compared with ``bench_expected``.

    Attributes:
        rows: Rows in the target.
        expected: Rows in ``bench_expected``.
        extra: Rows of the target that ``bench_expected`` lacks (``EXCEPT ALL``).
        missing: Rows of ``bench_expected`` that the target lacks (``EXCEPT ALL``).
    """

    rows: int
    expected: int
    extra: int
    missing: int

    @property
    def ok(self) -> bool:
        """True when the target holds exactly the expected rows."""
        return self.extra == 0 and self.missing == 0 and self.rows == self.expected

    def describe(self) -> str:
        """One line for the report."""
        if self.ok:
            return f"ok: {self.rows} rows, identical to {EXPECTED_VIEW}"
        return (
            f"WRONG: {self.rows} rows (expected {self.expected}), {self.extra} not in "
            f"{EXPECTED_VIEW}, {self.missing} of {EXPECTED_VIEW} missing"
        )


async def verify(dsn: str) -> Verification:
    """Compare ``bench_dst`` with ``bench_expected`` in both directions.

    ``EXCEPT ALL`` rather than ``EXCEPT``, so that a duplicated row is caught even where the row
    counts happen to agree.
    """
    async with _connect(dsn) as conn:
        row = await conn.fetchrow(
            f"""
            SELECT (SELECT count(*) FROM {TARGET_TABLE}) AS rows,
                   (SELECT count(*) FROM {SOURCE_TABLE}) AS expected,
                   (SELECT count(*) FROM (SELECT * FROM {TARGET_TABLE}
                                          EXCEPT ALL SELECT * FROM {EXPECTED_VIEW}) d) AS extra,
                   (SELECT count(*) FROM (SELECT * FROM {EXPECTED_VIEW}
                                          EXCEPT ALL SELECT * FROM {TARGET_TABLE}) d) AS missing
            """  # noqa: S608 -- constant table names
        )
    assert row is not None
    return Verification(row["rows"], row["expected"], row["extra"], row["missing"])


async def server_facts(dsn: str, locate: Callable[[int], int | None]) -> dict[str, Any]:
    """Version and settings of the server, and the pid of its postmaster when it is local.

    Args:
        dsn: The benchmark database.
        locate: Called with this connection's backend pid while the connection is open;
            returns the postmaster's pid if that backend runs on this machine, else ``None``.
    """
    async with _connect(dsn) as conn:
        version = await conn.fetchval("SELECT version()")
        current = await conn.fetchval("SELECT current_database()")
        server_version = await conn.fetchval("SHOW server_version")
        settings = {}
        for name in _SETTINGS:
            settings[name] = await conn.fetchval(
                "SELECT setting || coalesce(' ' || unit, '') || CASE WHEN source = 'default' "
                "THEN ' (default)' ELSE ' (' || source || ')' END FROM pg_settings "
                "WHERE name = $1",
                name,
            )
        address = await conn.fetchval("SELECT host(inet_server_addr())")
        local = address is None or address in ("127.0.0.1", "::1")
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        postmaster = locate(pid) if local else None
    return {
        "version": version,
        "database": current,
        "server_version": server_version,
        "settings": settings,
        "postmaster_pid": postmaster,
    }
