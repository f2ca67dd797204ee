"""Invariant 2: kill the process at any point, run again: the target equals one clean run.

Each test starts ``pgferry run`` in a subprocess and SIGKILLs it at a point the target shows
(:mod:`killing`): once the run has registered, or after a random number of committed batches
(or, for a run that commits once, of written pages). It checks what the target holds right
after each kill, asserts that every kill landed mid-run, and at the end lets a run finish and
compares the target with the source.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from helpers import Databases, execute, fetch, fetchval
from killing import Killer, KillPoint

pytestmark = pytest.mark.slow

ROWS = 8_000
BATCH = 250
SETUP = f"""
CREATE TABLE src (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, name text,
                  amount numeric(12,2));
INSERT INTO src SELECT g, timestamptz '2024-01-01 00:00+00' + (g / 7) * interval '1 second',
                       'n' || g, g * 0.5
FROM generate_series(1, {ROWS}) g;
"""
SLOW = "import time\n\ndef slow(row):\n    time.sleep(0.0002)\n    return row\n"


def killer(tmp_path: Path, dbs: Databases, body: str) -> Killer:
    (tmp_path / "slow.py").write_text(SLOW)
    job = tmp_path / "job.yaml"
    job.write_text(
        f"name: killed\nsource: {{dsn: '{dbs.source}', table: src, key: id}}\n"
        f"transform: slow:slow\nbatch_size: {BATCH}\nworkers: 0\nlock_wait: 30\n{body}"
    )
    return Killer(job, dbs.target, "killed")


def kill_point(rnd: random.Random, batches_left: int) -> KillPoint:
    """At start, or after a random number of the batches left, two short of the end (so that
    the kill lands before the run ends)."""
    if batches_left < 3 or rnd.random() < 0.2:
        return KillPoint.started()
    return KillPoint.after_batches(rnd.randint(1, batches_left - 2))


def batches_left(dbs: Databases) -> int:
    """Batches an append still has to commit: the source rows not in the target yet."""
    done = fetchval(dbs.target, "SELECT count(*) FROM dst") if target_exists(dbs.target) else 0
    return math.ceil((fetchval(dbs.source, "SELECT count(*) FROM src") - done) / BATCH)


def rows(dsn: str, table: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in fetch(dsn, f"SELECT * FROM {table} ORDER BY id")]


def target_exists(dsn: str, table: str = "dst") -> bool:
    return bool(fetchval(dsn, "SELECT to_regclass($1) IS NOT NULL", table))


def test_append_incremental_survives_kills(dbs: Databases, tmp_path: Path) -> None:
    execute(dbs.source, SETUP)
    runs = killer(
        tmp_path,
        dbs,
        f"target: {{dsn: '{dbs.target}', table: dst}}\nincremental: {{column: updated_at}}\n",
    )
    rnd = random.Random(20261121)
    next_id = ROWS + 1
    for attempt in range(14):
        assert runs.kill(kill_point(rnd, batches_left(dbs))), f"kill {attempt} did not land"
        if target_exists(dbs.target):
            # Exactly the source rows up to the committed watermark: no gap, no duplicate.
            mark = fetchval(dbs.target, "SELECT watermark FROM pgferry.ledger WHERE job='killed'")
            got = rows(dbs.target, "dst")
            if mark is None:
                assert got == []
            else:
                expected = [
                    tuple(r)
                    for r in fetch(
                        dbs.source,
                        "SELECT * FROM src WHERE (updated_at, id) <= "
                        "($1::text::timestamptz, $2::bigint) ORDER BY id",
                        mark[0],
                        int(mark[1]),
                    )
                ]
                assert got == expected, f"after kill {attempt}"
        if attempt % 3 == 2:  # the source keeps growing, with ties on the last timestamp
            execute(
                dbs.source,
                "INSERT INTO src SELECT g, (SELECT max(updated_at) FROM src), "
                "'late' || g, 1 FROM generate_series($1::bigint, $1::bigint + 40) g",
                next_id,
            )
            next_id += 41
    assert len(runs.landed) == 14
    assert any(p.startswith("after") for p in runs.landed), runs.landed
    runs.finish()
    assert rows(dbs.target, "dst") == rows(dbs.source, "src")


def test_upsert_survives_kills(dbs: Databases, tmp_path: Path) -> None:
    execute(dbs.source, SETUP)
    runs = killer(
        tmp_path, dbs, f"target: {{dsn: '{dbs.target}', table: dst, mode: upsert, key: id}}\n"
    )
    rnd = random.Random(7)
    versions = set(rows(dbs.source, "src"))  # every version a target row may hold
    for attempt in range(12):
        # A full upsert starts from the beginning every time.
        assert runs.kill(kill_point(rnd, ROWS // BATCH)), f"kill {attempt} did not land"
        if target_exists(dbs.target):
            got = rows(dbs.target, "dst")
            assert len({r[0] for r in got}) == len(got), f"duplicate keys after kill {attempt}"
            assert set(got) <= versions
        if attempt == 4:
            execute(dbs.source, "UPDATE src SET name = 'changed' WHERE id % 100 = 0")
            versions |= set(rows(dbs.source, "src"))
    assert len(runs.landed) == 12
    runs.finish()
    assert rows(dbs.target, "dst") == rows(dbs.source, "src")


def test_append_without_resume_key_is_all_or_nothing(dbs: Databases, tmp_path: Path) -> None:
    execute(dbs.source, SETUP)
    # No key at all (the primary key would be the default key): one transaction per run.
    execute(dbs.source, "ALTER TABLE src DROP CONSTRAINT src_pkey")
    # The run commits once, at its end: its progress shows as the pages its rows fill in the
    # target (autovacuum off, so that no freed room is reused and the table only grows).
    execute(
        dbs.target,
        "CREATE TABLE dst (id bigint, updated_at timestamptz, name text, amount numeric(12,2)) "
        "WITH (autovacuum_enabled = false)",
    )
    runs = killer(tmp_path, dbs, f"target: {{dsn: '{dbs.target}', table: dst}}\n")
    runs.job.write_text(runs.job.read_text().replace(", key: id}", "}"))
    rnd = random.Random(11)
    for attempt in range(4):
        # 8,000 rows fill about 60 pages.
        point = KillPoint.started() if attempt == 0 else KillPoint.after_pages(rnd.randint(1, 40))
        assert runs.kill(point), f"kill {attempt} did not land"
        count = fetchval(dbs.target, "SELECT count(*) FROM dst")
        assert count % ROWS == 0, f"part of a run after kill {attempt}: {count} rows"
    assert len(runs.landed) == 4
    before = fetchval(dbs.target, "SELECT count(*) FROM dst")
    runs.finish()
    assert fetchval(dbs.target, "SELECT count(*) FROM dst") == before + ROWS


def test_replace_survives_kills(dbs: Databases, tmp_path: Path) -> None:
    execute(dbs.source, SETUP)
    execute(
        dbs.target,
        "CREATE TABLE dst AS SELECT 1::bigint AS id, now() AS updated_at, "
        "'old'::text AS name, 0::numeric(12,2) AS amount",
    )
    runs = killer(tmp_path, dbs, f"target: {{dsn: '{dbs.target}', table: dst, mode: replace}}\n")
    rnd = random.Random(3)
    for attempt in range(4):
        # A replace starts over every time: all its batches are left.
        assert runs.kill(kill_point(rnd, ROWS // BATCH)), f"kill {attempt} did not land"
        count = fetchval(dbs.target, "SELECT count(*) FROM dst")
        assert count in (1, ROWS), f"a reader would see {count} rows after kill {attempt}"
    assert len(runs.landed) == 4
    runs.finish()
    assert rows(dbs.target, "dst") == rows(dbs.source, "src")
    assert fetchval(dbs.target, "SELECT count(*) FROM pg_class WHERE relname LIKE '_pgferry%'") == 0
