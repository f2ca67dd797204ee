"""Invariant 2: kill the process at any point, run again: the target equals one clean run.

Each test starts ``pgferry run`` in a subprocess, SIGKILLs it at a random moment (during start-up,
mid-batch, during a commit, after it finished), checks what the target holds right after the
kill, and at the end lets a run finish and compares the target with the source.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import Databases, execute, fetch, fetchval

ROWS = 8_000
SETUP = f"""
CREATE TABLE src (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, name text,
                  amount numeric(12,2));
INSERT INTO src SELECT g, timestamptz '2024-01-01 00:00+00' + (g / 7) * interval '1 second',
                       'n' || g, g * 0.5
FROM generate_series(1, {ROWS}) g;
"""
SLOW = "import time\n\ndef slow(row):\n    time.sleep(0.0002)\n    return row\n"
KILLS: list[float] = []  # every kill delay used, reported at the end of the module


def write_job(tmp_path: Path, dbs: Databases, body: str) -> Path:
    (tmp_path / "slow.py").write_text(SLOW)
    job = tmp_path / "job.yaml"
    job.write_text(
        f"name: killed\nsource: {{dsn: '{dbs.source}', table: src, key: id}}\n"
        f"transform: slow:slow\nbatch_size: 250\nworkers: 0\nlock_wait: 30\n{body}"
    )
    return job


def run(job: Path, kill_after: float | None) -> int | None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgferry", "run", str(job), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if kill_after is None:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        return proc.returncode
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        KILLS.append(kill_after)
    proc.communicate(timeout=60)
    return proc.returncode


def rows(dsn: str, table: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in fetch(dsn, f"SELECT * FROM {table} ORDER BY id")]


def target_exists(dsn: str, table: str = "dst") -> bool:
    return bool(fetchval(dsn, "SELECT to_regclass($1) IS NOT NULL", table))


def test_append_incremental_survives_kills(dbs: Databases, tmp_path: Path) -> None:
    execute(dbs.source, SETUP)
    job = write_job(
        tmp_path,
        dbs,
        f"target: {{dsn: '{dbs.target}', table: dst}}\nincremental: {{column: updated_at}}\n",
    )
    rnd = random.Random(20261121)
    next_id = ROWS + 1
    for attempt in range(14):
        run(job, rnd.uniform(0.2, 2.2))
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
    run(job, None)
    assert rows(dbs.target, "dst") == rows(dbs.source, "src")


def test_upsert_survives_kills(dbs: Databases, tmp_path: Path) -> None:
    execute(dbs.source, SETUP)
    job = write_job(
        tmp_path, dbs, f"target: {{dsn: '{dbs.target}', table: dst, mode: upsert, key: id}}\n"
    )
    rnd = random.Random(7)
    versions = set(rows(dbs.source, "src"))  # every version a target row may hold
    for attempt in range(12):
        run(job, rnd.uniform(0.2, 2.2))
        if target_exists(dbs.target):
            got = rows(dbs.target, "dst")
            assert len({r[0] for r in got}) == len(got), f"duplicate keys after kill {attempt}"
            assert set(got) <= versions
        if attempt == 4:
            execute(dbs.source, "UPDATE src SET name = 'changed' WHERE id % 100 = 0")
            versions |= set(rows(dbs.source, "src"))
    run(job, None)
    assert rows(dbs.target, "dst") == rows(dbs.source, "src")


def test_append_without_resume_key_is_all_or_nothing(dbs: Databases, tmp_path: Path) -> None:
    execute(dbs.source, SETUP)
    # No key at all (the primary key would be the default key): one transaction per run.
    execute(dbs.source, "ALTER TABLE src DROP CONSTRAINT src_pkey")
    job = write_job(tmp_path, dbs, f"target: {{dsn: '{dbs.target}', table: dst}}\n")
    job.write_text(job.read_text().replace(", key: id}", "}"))
    rnd = random.Random(11)
    for attempt in range(4):
        run(job, rnd.uniform(0.3, 2.5))
        if target_exists(dbs.target):
            count = fetchval(dbs.target, "SELECT count(*) FROM dst")
            assert count % ROWS == 0, f"part of a run after kill {attempt}: {count} rows"
    before = fetchval(dbs.target, "SELECT count(*) FROM dst") if target_exists(dbs.target) else 0
    run(job, None)
    assert fetchval(dbs.target, "SELECT count(*) FROM dst") == before + ROWS


def test_replace_survives_kills(dbs: Databases, tmp_path: Path) -> None:
    execute(dbs.source, SETUP)
    execute(
        dbs.target,
        "CREATE TABLE dst AS SELECT 1::bigint AS id, now() AS updated_at, "
        "'old'::text AS name, 0::numeric(12,2) AS amount",
    )
    job = write_job(tmp_path, dbs, f"target: {{dsn: '{dbs.target}', table: dst, mode: replace}}\n")
    rnd = random.Random(3)
    for attempt in range(4):
        run(job, rnd.uniform(0.3, 2.5))
        count = fetchval(dbs.target, "SELECT count(*) FROM dst")
        assert count in (1, ROWS), f"a reader would see {count} rows after kill {attempt}"
    run(job, None)
    assert rows(dbs.target, "dst") == rows(dbs.source, "src")
    assert fetchval(dbs.target, "SELECT count(*) FROM pg_class WHERE relname LIKE '_pgferry%'") == 0


@pytest.fixture(scope="module", autouse=True)
def report_kills() -> object:
    yield
    print(f"\nkill points tried: {len(KILLS)} (delays {sorted(round(k, 2) for k in KILLS)})")
    assert len(KILLS) >= 20, f"only {len(KILLS)} runs were killed before they finished"
