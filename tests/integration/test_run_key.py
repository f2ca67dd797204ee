"""``run_key``: running a finished full append again (a cleared Airflow task) adds nothing.

A full ``append`` is the one mode whose repetition is not idempotent. With a ``run_key`` the run
records, in the same transaction as its last rows, that the key's rows are committed; a later
run of the same job, partition and key finds that and ends ``skipped``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pgferry
from helpers import Databases, differences, execute, fetch, fetchval, job_with, load_workload
from killing import Killer, KillPoint

ROWS = 3_000


@pytest.fixture
def workload(dbs: Databases, monkeypatch: pytest.MonkeyPatch) -> Databases:
    """The standard workload; ``ferry_transforms`` importable in ``pgferry run`` subprocesses."""
    load_workload(dbs.source, ROWS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))
    return dbs


def job(dbs: Databases, **changes: Any) -> pgferry.Job:
    defaults: dict[str, Any] = {
        "name": "keyed",
        "source": {"dsn": dbs.source, "table": "bench_src"},
        # Source and target in one database, so that EXCEPT ALL can compare them in SQL.
        "target": {"dsn": dbs.source, "table": "people"},
        "transform": "ferry_transforms:split_name",
        "batch_size": 500,
        "workers": 0,
        "pipelines": 1,
        "run_key": "dag/run-1/task/-1",
    }
    job: pgferry.Job = job_with(defaults, **changes)
    return job


def runs(dsn: str) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in fetch(
            dsn,
            "SELECT status, run_key, committed_at IS NOT NULL, rows_written FROM pgferry.runs "
            "WHERE job = 'keyed' ORDER BY started_at",
        )
    ]


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param({}, id="no-key-one-transaction"),
        pytest.param({"source": {"key": "id"}}, id="key-resumable"),
        pytest.param({"source": {"key": "id"}, "pipelines": 2}, id="parallel-pipelines"),
    ],
)
def test_a_repeated_full_append_is_skipped(workload: Databases, variant: dict[str, Any]) -> None:
    first = pgferry.run(job(workload, **variant))
    assert first.status == "success"
    assert first.rows_written == ROWS
    assert first.run_key == "dag/run-1/task/-1"
    if "pipelines" in variant:
        assert first.workers == 2  # the parallel path really ran

    again = pgferry.run(job(workload, **variant))
    assert again.status == "skipped"
    assert again.committed_by == first.run_id
    assert (again.rows_read, again.rows_written, again.batches) == (0, 0, 0)
    assert differences(workload.source) == 0
    assert runs(workload.source) == [
        ("success", "dag/run-1/task/-1", True, ROWS),
        ("skipped", "dag/run-1/task/-1", False, 0),
    ]

    # Another key is another scheduled run: a full append appends again, by design.
    other = pgferry.run(job(workload, run_key="dag/run-2/task/-1", **variant))
    assert other.status == "success"
    assert fetchval(workload.source, "SELECT count(*) FROM people") == 2 * ROWS


def test_without_a_run_key_a_repeat_appends_again(workload: Databases) -> None:
    pgferry.run(job(workload, run_key=None))
    second = pgferry.run(job(workload, run_key=None))
    assert second.status == "success"
    assert fetchval(workload.source, "SELECT count(*) FROM people") == 2 * ROWS


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param({"target": {"mode": "upsert", "key": "id"}}, id="upsert"),
        pytest.param({"target": {"mode": "replace"}}, id="replace"),
        pytest.param({"source": {"key": "id"}, "incremental": {"column": "id"}}, id="incremental"),
    ],
)
def test_idempotent_modes_run_again_under_the_same_key(
    workload: Databases, variant: dict[str, Any]
) -> None:
    pgferry.run(job(workload, **variant))
    execute(workload.source, "UPDATE bench_src SET age = age + 1 WHERE id = 7")
    again = pgferry.run(job(workload, **variant))
    # Not skipped: rerunning converges, and picks up what changed in the source since.
    assert again.status == "success"
    assert again.committed_by is None
    assert fetchval(workload.source, "SELECT count(*) FROM people") == ROWS
    if "incremental" not in variant:
        assert fetchval(workload.source, "SELECT age FROM people WHERE id = 7") == fetchval(
            workload.source, "SELECT age FROM bench_src WHERE id = 7"
        )
    assert [r[1:3] for r in runs(workload.source)] == [("dag/run-1/task/-1", True)] * 2


def test_a_run_that_died_after_its_last_commit_counts_as_done(workload: Databases) -> None:
    first = pgferry.run(job(workload))
    # What a process killed between the commit of its rows and the record of its outcome leaves.
    execute(
        workload.source,
        "UPDATE pgferry.runs SET status = 'running', finished_at = NULL WHERE run_id = $1::uuid",
        first.run_id,
    )
    again = pgferry.run(job(workload))
    assert again.status == "skipped"
    assert again.committed_by == first.run_id
    assert differences(workload.source) == 0
    assert [r[0] for r in runs(workload.source)] == ["abandoned", "skipped"]


def test_a_failed_run_is_not_done(workload: Databases) -> None:
    # Row 2,000 fails the transform: with a key, the first 1,500 rows stay committed.
    bad = job(
        workload, source={"key": "id"}, transform="ferry_transforms:split_name_failing_at_2000"
    )
    with pytest.raises(pgferry.PgferryError):
        pgferry.run(bad)
    assert fetchval(workload.source, "SELECT count(*) FROM people") == 1_500
    again = pgferry.run(job(workload, source={"key": "id"}))
    assert again.status == "success"
    assert again.rows_written == ROWS - 1_500  # it continued; it was not skipped
    assert differences(workload.source) == 0


@pytest.mark.slow
def test_killed_runs_under_one_key_end_with_every_row_once(
    workload: Databases, tmp_path: Path
) -> None:
    """SIGKILL ``pgferry run --run-key`` at several points, then run it to the end twice."""
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        f"name: keyed\nsource: {{dsn: '{workload.source}', table: bench_src}}\n"
        f"target: {{dsn: '{workload.source}', table: people}}\n"
        "transform: ferry_transforms:slow_split_name\nbatch_size: 200\nworkers: 0\n"
        "lock_wait: 30\n"
    )
    command = [sys.executable, "-m", "pgferry", "run", str(job_file), "--quiet"]
    killer = Killer(job_file, workload.source, "keyed", table="people", args=["--run-key", "k"])
    # bench_src's primary key is the job's key: every batch (of 15) commits with its progress,
    # and the next run continues after it.
    for point in (KillPoint.started(), *map(KillPoint.after_batches, (1, 2, 3))):
        assert killer.kill(point), f"the kill {point} did not land"
        # Every kill leaves whole batches.
        if fetchval(workload.source, "SELECT to_regclass('people') IS NOT NULL"):
            left = fetchval(workload.source, "SELECT count(*) FROM people")
            assert left <= ROWS and (left % 200 == 0 or left == ROWS)
    assert len(killer.landed) == 4
    for _ in range(2):
        done = subprocess.run(
            [*command, "--run-key", "k", "--json"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    assert differences(workload.source) == 0
    statuses = [r[0] for r in runs(workload.source)]
    assert statuses.count("success") == 1
    assert statuses[-1] == "skipped"


def test_the_cli_reports_a_skip(workload: Databases, tmp_path: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        f"name: keyed\nsource: {{dsn: '{workload.source}', table: bench_src}}\n"
        f"target: {{dsn: '{workload.source}', table: people}}\n"
    )
    command = [sys.executable, "-m", "pgferry", "run", str(job_file), "--run-key", "2024-01-01"]
    assert subprocess.run(command, capture_output=True, check=False).returncode == 0
    second = subprocess.run(command, capture_output=True, text=True, check=False)
    assert second.returncode == 0, second.stderr
    assert "run key '2024-01-01' already committed its rows" in second.stderr
    assert "skipped" in second.stdout
    assert fetchval(workload.source, "SELECT count(*) FROM people") == ROWS
