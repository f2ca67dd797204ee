"""Keys from the source (#11 §1) and faithful created targets (§2), against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

import pgferry
from helpers import Databases, execute, fetch, fetchval, job_with
from pgferry import keys
from pgferry.engine.plan import SourcePlan
from pgferry.engine.ranges import why_not_parallel
from pgferry.errors import ConfigError
from pgferry.schema import Column


def job(dbs: Databases, table: str = "src", **kw: object) -> pgferry.Job:
    defaults = {
        "source": {"dsn": dbs.source, "table": table},
        "target": {"dsn": dbs.target, "table": "dst"},
    }
    built: pgferry.Job = job_with(defaults, **kw)
    return built


async def _choose(dsn: str, j: pgferry.Job) -> tuple[pgferry.Job, keys.KeyChoice]:
    conn = await asyncpg.connect(dsn)
    try:
        return await keys.resolve(conn, j)
    finally:
        await conn.close()


def choose(dbs: Databases, j: pgferry.Job) -> tuple[pgferry.Job, keys.KeyChoice]:
    return asyncio.run(_choose(dbs.source, j))


# Each case: the source's DDL, the job's keys, then the expected (columns, origin).
KEY_CASES = {
    "primary key": (
        "CREATE TABLE src (id int PRIMARY KEY, code text NOT NULL UNIQUE, a text)",
        {},
        (("id",), "primary key"),
    ),
    "unique index only": (
        "CREATE TABLE src (id int, code text NOT NULL, b int NOT NULL, a text);"
        "CREATE UNIQUE INDEX src_code_b ON src (code, b);"
        "CREATE UNIQUE INDEX src_code ON src (code);"
        "CREATE UNIQUE INDEX src_id ON src (id)",  # nullable: not a key
        {},
        (("code",), "unique index"),
    ),
    "no key": (
        "CREATE TABLE src (id int, a text); CREATE UNIQUE INDEX ON src (id);"
        "CREATE UNIQUE INDEX ON src (a) WHERE a IS NOT NULL",
        {},
        (None, "none"),
    ),
    "composite": (
        "CREATE TABLE src (tenant int, id int, a text, PRIMARY KEY (tenant, id))",
        {},
        (("tenant", "id"), "primary key"),
    ),
    "override": (
        "CREATE TABLE src (id int PRIMARY KEY, code text NOT NULL UNIQUE, a text)",
        {"source": {"key": "code"}},
        (("code",), "job"),
    ),
}


@pytest.mark.parametrize("case", list(KEY_CASES))
def test_key_inference(dbs: Databases, case: str) -> None:
    ddl, overrides, (columns, origin) = KEY_CASES[case]
    execute(dbs.source, ddl)
    resolved, choice = choose(dbs, job(dbs, **overrides))
    assert (choice.columns, choice.origin) == (columns, origin)
    assert resolved.read_key == (list(columns) if columns else None)
    if case == "no key":
        assert "no primary key and no unique index on NOT NULL columns" in choice.why


def test_upsert_and_incremental_default_to_the_primary_key(dbs: Databases) -> None:
    execute(
        dbs.source,
        "CREATE TABLE src (id int PRIMARY KEY, a text NOT NULL, updated_at timestamptz);"
        "COMMENT ON TABLE src IS 'the source''s table';"
        "COMMENT ON COLUMN src.a IS 'column a';"
        "INSERT INTO src SELECT g, 'v' || g, now() FROM generate_series(1, 50) g",
    )
    j = job(dbs, target={"mode": "upsert"}, incremental={"column": "updated_at"}, batch_size=7)
    assert j.target.key is None  # validated without a database; resolved at run time
    result = pgferry.run(j)
    assert result.rows_written == 50
    execute(dbs.source, "UPDATE src SET a = 'new', updated_at = now() WHERE id <= 3")
    assert pgferry.run(j).rows_written == 3
    assert fetchval(dbs.target, "SELECT count(*) FROM dst WHERE a = 'new'") == 3
    # §2: PRIMARY KEY (not a bare unique index), NOT NULL, comments.
    pk = fetch(
        dbs.target,
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'dst'::regclass AND contype = 'p'",
    )
    assert [r[1] for r in pk] == ["PRIMARY KEY (id)"]
    assert (
        fetchval(dbs.target, "SELECT count(*) FROM pg_index WHERE indrelid = 'dst'::regclass") == 1
    )
    not_null = fetch(
        dbs.target,
        "SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = 'dst'::regclass "
        "AND attnum > 0 ORDER BY attnum",
    )
    assert [tuple(r) for r in not_null] == [("id", True), ("a", True), ("updated_at", False)]
    assert fetchval(dbs.target, "SELECT obj_description('dst'::regclass, 'pg_class')") == (
        "the source's table"
    )
    assert fetchval(dbs.target, "SELECT col_description('dst'::regclass, 2)") == "column a"


def test_replace_creates_primary_key_append_does_not(dbs: Databases) -> None:
    execute(
        dbs.source,
        "CREATE TABLE src (id int PRIMARY KEY, a text);"
        "INSERT INTO src SELECT g, 'v' FROM generate_series(1, 10) g",
    )
    pgferry.run(job(dbs, target={"mode": "replace"}))
    pgferry.run(job(dbs, target={"table": "app"}))
    primary = "SELECT count(*) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'"
    assert fetchval(dbs.target, primary, "dst") == 1
    assert fetchval(dbs.target, primary, "app") == 0
    assert fetchval(dbs.target, "SELECT count(*) FROM app") == 10


def test_keyless_table_and_query_source_keep_clear_errors(dbs: Databases) -> None:
    execute(dbs.source, "CREATE TABLE src (id int, a text); INSERT INTO src VALUES (1, 'x')")
    with pytest.raises(ConfigError, match=r"mode 'upsert' needs target.key .*no primary key"):
        pgferry.run(job(dbs, target={"mode": "upsert"}))
    with pytest.raises(ConfigError, match=r"incremental needs a key .*no primary key"):
        pgferry.run(job(dbs, incremental={"column": "id"}))
    with pytest.raises(ConfigError, match=r"mode .upsert. needs target\.key"):
        pgferry.Job.from_dict(
            {
                "source": {"dsn": dbs.source, "query": "SELECT * FROM src"},
                "target": {"dsn": dbs.target, "table": "dst", "mode": "upsert"},
            }
        )


def test_replace_with_auto_pipelines_uses_the_primary_key(dbs: Databases) -> None:
    execute(
        dbs.source,
        "CREATE TABLE src (id int PRIMARY KEY, a text);"
        "INSERT INTO src SELECT g, 'v' || g FROM generate_series(1, 1000) g",
    )
    j = job(dbs, target={"mode": "replace"}, transform="ferry_transforms:identity")
    resolved, choice = choose(dbs, j)
    assert choice.origin == "primary key"
    columns = [Column("id", "integer"), Column("a", "text")]
    plan = SourcePlan(query="", args=[], columns=columns, estimate=None)
    # The key no longer stops parallel pipelines: only the measurement of the first batch does.
    assert why_not_parallel(resolved, plan) is None
    assert why_not_parallel(j, plan) is not None


def test_cli_plan_shows_the_key_and_why(dbs: Databases, tmp_path: Path) -> None:
    execute(
        dbs.source,
        "CREATE TABLE src (id int PRIMARY KEY, a text);"
        "INSERT INTO src SELECT g, 'v' FROM generate_series(1, 100) g",
    )
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        f"source: {{dsn: '{dbs.source}', table: src}}\ntarget: {{dsn: '{dbs.target}', table: d}}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pgferry", "plan", str(job_file), "-n", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "key: id: the primary key src_pkey of source table src" in proc.stderr
    parts = json.loads(proc.stdout)
    assert [p["column"] for p in parts] == ["id", "id"]
