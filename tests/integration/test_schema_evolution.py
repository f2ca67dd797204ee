"""Schema evolution (#11 §3, §6): the drift matrix across modes, against a real PostgreSQL.

Every case loads ``drift`` once (pgferry creates the target), decorates the target the way a
team would (a grant to another role, a dependent view with its own grant, a secondary index,
comments), changes the source, runs the same job again, and checks the target's shape, its
rows and that every decoration survived.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pgferry
from helpers import Databases, execute, fetch, fetchval
from pgferry.errors import SchemaError

ROWS = 50

SOURCE = f"""
CREATE TABLE drift (
  id int PRIMARY KEY, a varchar(10), n numeric(10,2), i int, d text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO drift (id, a, n, i, d)
SELECT g, 'a' || g, g * 1.5, g, 'd' || g FROM generate_series(1, {ROWS}) g;
"""


@dataclass(frozen=True)
class Drift:
    """One change to the source, and what the second run must do."""

    ddl: str
    policy: str = "evolve"
    allow_rewrite: bool = False
    changes: tuple[tuple[str, str, str | None, str | None], ...] = ()
    types: tuple[tuple[str, str], ...] = ()  # (column, target type after the run)
    fails: str | None = None  # a message the run fails with


DRIFTS = {
    "add": Drift(
        "ALTER TABLE drift ADD COLUMN b numeric(10,2); UPDATE drift SET b = 2.5",
        changes=(("b", "add column", None, "numeric(10,2)"),),
        types=(("b", "numeric(10,2)"),),
    ),
    "widen varchar": Drift(
        "ALTER TABLE drift ALTER COLUMN a TYPE varchar(20); UPDATE drift SET a = repeat('w', 15)",
        changes=(("a", "widen type", "character varying(10)", "character varying(20)"),),
        types=(("a", "character varying(20)"),),
    ),
    "widen numeric": Drift(
        "ALTER TABLE drift ALTER COLUMN n TYPE numeric(14,2); UPDATE drift SET n = 123456789012.25",
        changes=(("n", "widen type", "numeric(10,2)", "numeric(14,2)"),),
        types=(("n", "numeric(14,2)"),),
    ),
    "int to bigint": Drift(
        "ALTER TABLE drift ALTER COLUMN i TYPE bigint; UPDATE drift SET i = 5000000000 + id",
        changes=(("i", "change type", "integer", "bigint"),),
        types=(("i", "bigint"),),
        fails="column 'i' from integer to bigint needs a rewrite",
    ),
    "int to bigint, allow_rewrite": Drift(
        "ALTER TABLE drift ALTER COLUMN i TYPE bigint; UPDATE drift SET i = 5000000000 + id",
        allow_rewrite=True,
        changes=(("i", "change type", "integer", "bigint"),),
        types=(("i", "bigint"),),
    ),
    "drop": Drift(
        "ALTER TABLE drift DROP COLUMN d; UPDATE drift SET a = 'dropped'",
        changes=(("d", "drop not null", "text", None),),
        types=(("d", "text"),),
    ),
    "rename": Drift(
        "ALTER TABLE drift RENAME COLUMN d TO d2; UPDATE drift SET a = 'renamed'",
        changes=(("d2", "add column", None, "text"), ("d", "drop not null", "text", None)),
        types=(("d", "text"), ("d2", "text")),
    ),
    "freeze": Drift(
        "ALTER TABLE drift ADD COLUMN b numeric(10,2), ALTER COLUMN a TYPE text",
        policy="freeze",
        fails="'freeze': column 'a' character varying(10) -> text (widens in place); "
        "new column 'b' numeric(10,2)",
    ),
    "discard": Drift(
        "ALTER TABLE drift ADD COLUMN b numeric(10,2); UPDATE drift SET b = 2.5, a = 'kept'",
        policy="discard",
    ),
}

MODES = {
    "append": {"target": {"mode": "append"}},
    "upsert": {"target": {"mode": "upsert"}},
    "incremental": {"target": {"mode": "upsert"}, "incremental": {"column": "updated_at"}},
    "replace": {"target": {"mode": "replace"}},
}


@pytest.fixture
def reader(dbs: Databases) -> Iterator[str]:
    """A role of its own (roles are shared by the whole server), dropped afterwards."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    execute(dbs.target, f'CREATE ROLE "{role}"')
    try:
        yield role
    finally:
        execute(dbs.target, f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')


def make_job(dbs: Databases, mode: str, **target: Any) -> pgferry.Job:
    spec = MODES[mode]
    data: dict[str, Any] = {
        "source": {"dsn": dbs.source, "table": "drift"},
        "target": {"dsn": dbs.target, "table": "drift", **spec["target"], **target},
        "max_retries": 0,
    }
    if "incremental" in spec:
        data["incremental"] = spec["incremental"]
    return pgferry.Job.from_dict(data)


def decorate(dsn: str, role: str) -> None:
    execute(
        dsn,
        f"""
        GRANT SELECT ON drift TO "{role}";
        CREATE VIEW drift_v AS SELECT id, a, n, i, d FROM drift;
        GRANT SELECT ON drift_v TO "{role}";
        COMMENT ON VIEW drift_v IS 'the view';
        CREATE INDEX drift_a_idx ON drift (a);
        COMMENT ON TABLE drift IS 'the table';
        COMMENT ON COLUMN drift.a IS 'column a';
        """,
    )


def column_types(dsn: str) -> dict[str, str]:
    rows = fetch(
        dsn,
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'drift'::regclass AND attnum > 0 AND NOT attisdropped",
    )
    return {r[0]: r[1] for r in rows}


def assert_decorations_survive(dsn: str, role: str) -> None:
    checks = fetch(
        dsn,
        "SELECT has_table_privilege($1, 'drift', 'SELECT'),"
        " has_table_privilege($1, 'drift_v', 'SELECT'),"
        " obj_description('drift'::regclass, 'pg_class'),"
        " obj_description('drift_v'::regclass, 'pg_class'),"
        " col_description('drift'::regclass,"
        "   (SELECT attnum FROM pg_attribute WHERE attrelid = 'drift'::regclass"
        "    AND attname = 'a')::int),"
        " to_regclass('drift_a_idx') IS NOT NULL",
        role,
    )[0]
    assert tuple(checks) == (True, True, "the table", "the view", "column a", True)
    assert fetchval(dsn, "SELECT count(*) FROM drift_v") == fetchval(
        dsn, "SELECT count(*) FROM drift"
    )


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", list(DRIFTS))
def test_drift_matrix(dbs: Databases, reader: str, case: str, mode: str) -> None:
    drift = DRIFTS[case]
    execute(dbs.source, SOURCE)
    job = make_job(dbs, mode, schema_changes=drift.policy, allow_rewrite=drift.allow_rewrite)
    assert pgferry.run(job).rows_written == ROWS
    decorate(dbs.target, reader)
    before = column_types(dbs.target)
    heap = fetchval(dbs.target, "SELECT relfilenode FROM pg_class WHERE relname = 'drift'")
    execute(dbs.source, drift.ddl + "; UPDATE drift SET updated_at = now() + interval '1 hour'")
    # replace builds a new table on every run: a type change needs no allow_rewrite there.
    fails = drift.fails if mode != "replace" or "rewrite" not in (drift.fails or "") else None

    if fails is not None:
        with pytest.raises(SchemaError, match=fails.replace("(", r"\(").replace(")", r"\)")):
            pgferry.run(job)
        assert column_types(dbs.target) == before  # nothing changed
        assert_decorations_survive(dbs.target, reader)
        return

    result = pgferry.run(job)
    assert result.status == "success"
    expected = [{"column": c, "change": k, "from": f, "to": t} for c, k, f, t in drift.changes]
    assert sorted(result.schema_changes, key=str) == sorted(expected, key=str)
    after = column_types(dbs.target)
    for column, type_name in drift.types:
        assert after[column] == type_name
    if drift.policy == "discard":
        assert after == before
    if mode != "replace":
        # Only a rewrite writes a new heap; every other change is made in place.
        same = heap == fetchval(
            dbs.target, "SELECT relfilenode FROM pg_class WHERE relname = 'drift'"
        )
        assert same == (not drift.allow_rewrite)
    assert_decorations_survive(dbs.target, reader)
    # The rows: every source row is in the target with its new values.
    total = fetchval(dbs.target, "SELECT count(*) FROM drift")
    assert total == (2 * ROWS if mode == "append" else ROWS)
    source_cols = set(column_types(dbs.source)) & set(after)
    cols = ", ".join(sorted(source_cols - {"updated_at"}))
    latest = fetch(dbs.source, f"SELECT {cols} FROM drift ORDER BY id")
    got = fetch(
        dbs.target,
        f"SELECT DISTINCT ON (id) {cols} FROM drift ORDER BY id, ctid DESC",
    )
    assert [tuple(r) for r in got] == [tuple(r) for r in latest]
    if case in ("drop", "rename") and mode != "upsert" and mode != "incremental":
        # A column the source dropped loads as NULL (an upsert keeps its last value).
        assert fetchval(dbs.target, "SELECT count(*) FROM drift WHERE d IS NULL") == ROWS


LANES = {
    "rows": "ferry_transforms:identity",
    "columnar": "pgferry_test_transforms:identity_arrow",
    "columnar-polars": "pgferry_test_transforms:identity_polars",
}


@pytest.mark.parametrize("lane", LANES)
@pytest.mark.parametrize("case", ["add", "discard", "drop"])
def test_drift_through_a_transform(dbs: Databases, reader: str, case: str, lane: str) -> None:
    """The same drift through a transform: decoded rows, or Arrow batches (``discard``
    projects both)."""
    drift = DRIFTS[case]
    execute(dbs.source, SOURCE)
    job = make_job(dbs, "upsert", schema_changes=drift.policy).with_overrides(
        transform=LANES[lane], workers=0, batch_size=20
    )
    assert pgferry.run(job).rows_written == ROWS
    decorate(dbs.target, reader)
    execute(dbs.source, drift.ddl)
    result = pgferry.run(job)
    assert result.path == lane.split("-")[0]
    expected = [{"column": c, "change": k, "from": f, "to": t} for c, k, f, t in drift.changes]
    assert result.schema_changes == expected
    assert_decorations_survive(dbs.target, reader)
    if case == "discard":
        assert "b" not in column_types(dbs.target)
        assert fetchval(dbs.target, "SELECT count(*) FROM drift WHERE a = 'kept'") == ROWS
    if case == "add":
        assert fetchval(dbs.target, "SELECT count(*) FROM drift WHERE b = 2.5") == ROWS


@pytest.mark.slow
def test_cli_prints_the_changes(dbs: Databases, tmp_path: Path) -> None:
    execute(dbs.source, SOURCE)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        f"source: {{dsn: '{dbs.source}', table: drift}}\n"
        f"target: {{dsn: '{dbs.target}', table: drift, mode: upsert}}\n"
    )
    command = [sys.executable, "-m", "pgferry", "run", str(job_file)]
    assert subprocess.run(command, capture_output=True, timeout=120).returncode == 0
    execute(dbs.source, DRIFTS["add"].ddl)
    shown = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "schema: add column" in shown.stdout and "b numeric(10,2)" in shown.stdout
    assert "new column 'b' numeric(10,2)" in shown.stderr  # the warning in the log
    execute(dbs.source, "ALTER TABLE drift ALTER COLUMN a TYPE text")
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120)
    widened = [
        {"column": "a", "change": "widen type", "from": "character varying(10)", "to": "text"}
    ]
    assert json.loads(as_json.stdout)["schema_changes"] == widened
    # The run history keeps what each run changed.
    status = [sys.executable, "-m", "pgferry", "status", "--target-dsn", dbs.target]
    history = subprocess.run([*status, "--json"], capture_output=True, text=True, timeout=120)
    assert history.returncode == 0, history.stderr
    assert [r["schema_changes"] for r in json.loads(history.stdout)] == [
        widened,
        [{"column": "b", "change": "add column", "from": None, "to": "numeric(10,2)"}],
        [],
    ]
    wide = {**os.environ, "COLUMNS": "250"}  # rich wraps cells to the terminal's width
    table = subprocess.run(status, capture_output=True, text=True, timeout=120, env=wide)
    assert "add column b" in table.stdout and "widen type a" in table.stdout
