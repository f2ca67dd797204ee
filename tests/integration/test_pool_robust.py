"""Runs with a transform pool whose workers die, or that starts under a hostile ``__main__``."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import pgferry
from helpers import Databases, differences, fetchval, load_workload

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"
GONE = "worker processes of transform"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("transform", "reason"),
    [
        # Every worker exits on its first batch: the whole run falls back.
        ("ferry_transforms:split_name_outside_workers", "exited with code 1"),
        # A worker is SIGKILLed at id 1000: the batches before it were transformed in the
        # pool, those in flight are transformed again in the parent.
        ("ferry_transforms:split_name_killed_at_1000", "killed by SIGKILL"),
    ],
)
def test_run_completes_when_the_workers_die(
    dbs: Databases, caplog: pytest.LogCaptureFixture, transform: str, reason: str
) -> None:
    caplog.set_level(logging.WARNING, logger="pgferry")
    load_workload(dbs.source, 2_000)
    job = pgferry.Job.from_dict(
        {
            "name": "dying-workers",
            "source": {"dsn": dbs.source, "table": "bench_src", "key": "id"},
            # Same database as the source, so that SQL compares the target with the expected.
            "target": {"dsn": dbs.source, "table": "people"},
            "transform": transform,
            "batch_size": 100,
            "workers": 2,
        }
    )
    result = pgferry.run(job)
    assert result.status == "success"
    assert result.rows_read == result.rows_written == 2_000
    assert result.batches == 20
    assert fetchval(dbs.source, "SELECT count(*) FROM people") == 2_000
    assert differences(dbs.source) == 0  # no row lost, none written twice
    [warning] = [r for r in caplog.records if GONE in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert transform in warning.getMessage()
    assert reason in warning.getMessage()


SCRIPT = """
import json, os, sys
sys.path[:0] = [{tests!r}, {src!r}]
if __name__ != "__main__":  # imported again, as a spawned child's __mp_main__
    with open({marker!r}, "a") as f:
        f.write(__name__ + "\\n")
    raise RuntimeError("this script must not be imported by a worker")

import pgferry

job = pgferry.Job.from_dict(
    {{
        "source": {{"dsn": {source!r}, "table": "bench_src", "key": "id"}},
        "target": {{"dsn": {target!r}, "table": "tagged"}},
        "transform": "ferry_transforms:with_pid",
        "batch_size": 100,
        "workers": 2,
    }}
)
result = pgferry.run(job)
print(json.dumps({{"me": os.getpid(), "workers": result.workers, "rows": result.rows_written}}))
"""


@pytest.mark.slow
def test_pool_started_under_a_main_that_must_not_be_imported(
    dbs: Databases, tmp_path: Path
) -> None:
    load_workload(dbs.source, 1_000)
    marker = tmp_path / "reimported"
    script = tmp_path / "main_script.py"
    script.write_text(
        SCRIPT.format(
            tests=str(TESTS),
            src=str(SRC),
            marker=str(marker),
            source=dbs.source,
            target=dbs.target,
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not marker.exists(), "a pool worker imported the parent's __main__"
    assert GONE not in proc.stderr  # the pool did not fall back to the parent
    assert out["workers"] == 2
    assert out["rows"] == 1_000
    # Every row was transformed by a worker process, none by the script itself.
    assert fetchval(dbs.target, "SELECT count(*) FROM tagged WHERE pid = $1", out["me"]) == 0
    assert fetchval(dbs.target, "SELECT count(DISTINCT pid) FROM tagged") >= 1
    assert fetchval(dbs.target, "SELECT count(*) FROM tagged") == 1_000
