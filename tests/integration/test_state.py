"""The state schema: creation, versioned migrations, refusing a newer schema."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from helpers import Databases, execute, fetch, fetchval
from pgferry.errors import PgferryError
from pgferry.state import _DDL, SCHEMA_VERSION, StateStore


def ensure(dsn: str, schema: str = "pgferry") -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await StateStore(schema).ensure(conn)
        finally:
            await conn.close()

    asyncio.run(go())


def test_fresh_schema_is_at_the_current_version(dbs: Databases) -> None:
    ensure(dbs.target, "ferry state")  # any schema name, quoted
    version = fetchval(dbs.target, 'SELECT value FROM "ferry state".meta')
    assert version == str(SCHEMA_VERSION)
    columns = {
        r[0]
        for r in fetch(
            dbs.target,
            "SELECT column_name FROM information_schema."
            "columns WHERE table_schema = 'ferry state' AND table_name = 'runs'",
        )
    }
    assert {"run_key", "committed_at", "schema_changes"} <= columns


def test_version_1_is_migrated_in_place(dbs: Databases) -> None:
    # What pgferry 0.1's first release created: the version-1 tables, with a run in them.
    for statement in _DDL:
        execute(dbs.target, statement.format(s="pgferry"))
    execute(dbs.target, "INSERT INTO pgferry.meta VALUES ('schema_version', '1')")
    execute(
        dbs.target,
        "INSERT INTO pgferry.runs (run_id, job, started_at, status) VALUES "
        "(gen_random_uuid(), 'old', now(), 'success')",
    )
    ensure(dbs.target)
    assert fetchval(dbs.target, "SELECT value FROM pgferry.meta") == str(SCHEMA_VERSION)
    assert fetchval(dbs.target, "SELECT count(*) FROM pgferry.runs WHERE run_key IS NULL") == 1
    ensure(dbs.target)  # idempotent


def test_recent_runs_read_a_schema_not_migrated_yet(dbs: Databases) -> None:
    """``pgferry status`` only reads: against the version-1 tables (no ``schema_changes``
    column yet) it lists the runs, with no schema changes."""
    for statement in _DDL:
        execute(dbs.target, statement.format(s="pgferry"))
    execute(
        dbs.target,
        "INSERT INTO pgferry.runs (run_id, job, started_at, status) VALUES "
        "(gen_random_uuid(), 'old', now(), 'success')",
    )

    async def go() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dbs.target)
        try:
            return await StateStore().recent_runs(conn, None, 5)
        finally:
            await conn.close()

    runs = asyncio.run(go())
    assert [(r["job"], r["schema_changes"]) for r in runs] == [("old", [])]


def test_a_newer_schema_is_refused(dbs: Databases) -> None:
    ensure(dbs.target)
    execute(dbs.target, "UPDATE pgferry.meta SET value = '999'")
    with pytest.raises(PgferryError, match="version 999, newer than this pgferry understands"):
        ensure(dbs.target)
