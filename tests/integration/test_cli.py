"""The command line, run as a user runs it: a subprocess with real files and a real server."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import Databases, fetchval, load_workload
from killing import Killer, KillPoint

PGFERRY = [sys.executable, "-m", "pgferry"]


def pgferry(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PGFERRY, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def copy_options(source_dsn: str, table: str, target_dsn: str) -> list[str]:
    """``pgferry run`` options that copy ``table`` to a target table ``copy``."""
    return ["--source-dsn", source_dsn, "--source-table", table, "--target-dsn", target_dsn,
            "--target-table", "copy"]  # fmt: skip


def test_run_job_file_with_env_and_json(dbs: Databases, tmp_path: Path) -> None:
    load_workload(dbs.source, 1_000)
    (tmp_path / "people_transform.py").write_text(
        "def split(row):\n"
        "    first, _, last = row['name'].partition(' ')\n"
        "    return {'id': row['id'], 'first_name': first, 'last_name': last}\n"
    )
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: people-copy\n"
        "source:\n  dsn: ${SRC_DSN}\n  table: bench_src\n  key: id\n"
        "target:\n  dsn: ${TGT_DSN}\n  table: public.people\n"
        "transform: people_transform:split\n"
        "batch_size: 300\n"
    )
    proc = pgferry(
        "run",
        str(job),
        "--json",
        "--set",
        "workers=0",
        env={"SRC_DSN": dbs.source, "TGT_DSN": dbs.target},
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # exactly one JSON object, nothing else
    assert result["status"] == "success"
    assert result["job"] == "people-copy"
    assert result["rows_written"] == 1_000
    assert result["batches"] == 4
    assert set(result["stages"]) == {"extract", "transform", "load"}
    expected = fetchval(
        dbs.source, "SELECT count(DISTINCT substr(name, strpos(name, ' ') + 1)) FROM bench_src"
    )
    assert fetchval(dbs.target, "SELECT count(DISTINCT last_name) FROM people") == expected


def test_run_inline_options(dbs: Databases) -> None:
    load_workload(dbs.source, 100)
    proc = pgferry(
        "run",
        *copy_options(dbs.source, "bench_src", dbs.target),
        "--mode",
        "replace",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert fetchval(dbs.target, "SELECT count(*) FROM copy") == 100


@pytest.mark.slow
def test_summary_table_without_json(dbs: Databases) -> None:
    load_workload(dbs.source, 10)
    proc = pgferry(
        "run",
        *copy_options(dbs.source, "bench_src", dbs.target),
    )
    assert proc.returncode == 0, proc.stderr
    assert "rows written" in proc.stdout
    assert "success" in proc.stdout


def test_invalid_job_exits_2_naming_the_key(tmp_path: Path) -> None:
    job = tmp_path / "bad.yaml"
    job.write_text("source: {dsn: x, table: t, tabel: u}\ntarget: {table: t, mode: upsertt}\n")
    proc = pgferry("run", str(job))
    assert proc.returncode == 2
    assert "source.tabel: unknown key" in proc.stderr
    assert "target.mode" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = pgferry("run", str(job), "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["status"] == "failed"


def test_missing_env_var_and_missing_file(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        '[source]\ndsn = "${NOT_SET_ANYWHERE_123}"\ntable = "t"\n[target]\ntable = "t"\n'
    )
    proc = pgferry("run", str(job))
    assert proc.returncode == 2
    assert "source.dsn: environment variable NOT_SET_ANYWHERE_123 is not set" in proc.stderr
    proc = pgferry("run", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert "cannot read job file" in proc.stderr


def test_failed_run_exits_1_with_clear_message(dbs: Databases) -> None:
    proc = pgferry(
        "run",
        *copy_options(dbs.source, "missing_table", dbs.target),
    )
    assert proc.returncode == 1
    assert "source table missing_table does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    debug = pgferry(
        "run",
        *copy_options(dbs.source, "missing_table", dbs.target),
        "--debug",
    )
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr


def test_password_never_printed(dbs: Databases) -> None:
    dsn = dbs.source.replace("postgres@", "postgres:hunter2@")
    proc = pgferry(
        "run",
        *copy_options(dsn, "missing_table", dsn),
        "--json",
        "--debug",
    )
    assert proc.returncode == 1
    assert "hunter2" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_progress_bar_on_a_terminal(dbs: Databases) -> None:
    load_workload(dbs.source, 3_000)
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run(
            [
                *PGFERRY,
                "run",
                *copy_options(dbs.source, "bench_src", dbs.target),
                "--transform",
                "pgferry.demo:split_name",
                "--batch-size",
                "500",
                "--workers",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "160"},
        )
        os.close(secondary)
        secondary = -1
        chunks = []
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        screen = b"".join(chunks).decode(errors="replace")
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    assert proc.returncode == 0
    assert "3000/3000" in screen  # rows done / estimated total from pg_class.reltuples
    assert "rows/s" in screen


@pytest.mark.slow
def test_ctrl_c_stops_cleanly(dbs: Databases, tmp_path: Path) -> None:
    load_workload(dbs.source, 50_000)
    (tmp_path / "slow.py").write_text(
        "import time\n\ndef slow(row):\n    time.sleep(0.0002)\n    return row\n"
    )
    job = tmp_path / "job.yaml"
    # With a key, every batch commits with its progress: some are in when Ctrl-C arrives.
    job.write_text(
        f"name: ctrl-c\nsource: {{dsn: '{dbs.source}', table: bench_src, key: id}}\n"
        f"target: {{dsn: '{dbs.target}', table: copy}}\n"
        "transform: slow:slow\nbatch_size: 1000\nworkers: 0\n"
    )
    # Ctrl-C once a batch is committed (of 50).
    outcome = Killer(job, dbs.target, "ctrl-c").run(KillPoint.after_batches(1), signal.SIGINT)
    assert outcome.landed
    assert outcome.returncode == 130, outcome
    assert "interrupted" in outcome.stderr
    assert "Traceback" not in outcome.stderr
    written = fetchval(dbs.target, "SELECT count(*) FROM copy")
    assert 0 < written < 50_000
    assert written % 1000 == 0
    left = fetchval(
        dbs.target, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgferry:%'"
    )
    assert left == 0


@pytest.mark.slow
def test_demo_small(tmp_path: Path) -> None:
    proc = pgferry("demo", "--rows", "5000", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "identical" in proc.stdout
    assert "5,000" in proc.stdout


@pytest.mark.slow
def test_status_reset_and_plan(dbs: Databases, tmp_path: Path) -> None:
    load_workload(dbs.source, 1_000)
    job = tmp_path / "job.yaml"
    job.write_text(
        f"name: inc\nsource: {{dsn: '{dbs.source}', table: bench_src, key: id}}\n"
        f"target: {{dsn: '{dbs.target}', table: copy}}\n"
        "incremental: {column: created_at}\n"
    )
    assert pgferry("run", str(job), "--quiet").returncode == 0
    status = pgferry("status", "--target-dsn", dbs.target, "--json")
    assert status.returncode == 0, status.stderr
    runs = json.loads(status.stdout)
    assert [(r["job"], r["status"], r["rows_written"]) for r in runs] == [("inc", "success", 1000)]
    table = pgferry("status", "--job", "inc", env={"PGFERRY_TARGET_DSN": dbs.target})
    assert "success" in table.stdout and "inc" in table.stdout

    # Nothing new to read; after a reset, everything again.
    assert json.loads(pgferry("run", str(job), "--json").stdout)["rows_written"] == 0
    refused = subprocess.run(
        [*PGFERRY, "reset", "--target-dsn", dbs.target, "--job", "inc"],
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert fetchval(dbs.target, "SELECT count(*) FROM pgferry.ledger") == 1
    done = pgferry("reset", "--target-dsn", dbs.target, "--job", "inc", "--yes")
    assert done.returncode == 0, done.stderr
    assert "cleared 1 ledger entry" in done.stderr
    assert json.loads(pgferry("run", str(job), "--json").stdout)["rows_written"] == 1000

    plan = pgferry("plan", str(job), "-n", "4", "--json")
    assert plan.returncode == 0, plan.stderr
    parts = json.loads(plan.stdout)
    assert [(p["lower"], p["upper"]) for p in parts] == [
        (None, 251),
        (251, 501),
        (501, 751),
        (751, None),
    ]
