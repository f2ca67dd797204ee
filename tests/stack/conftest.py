"""The stack for the end-to-end tests: started by ``scripts/stack.py`` (``make stack``), once.

Only ``make test-stack`` collects this directory (see ``tests/conftest.py``). The stack runs in a
state directory of its own, so a contributor's ``make stack`` is left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stack_support import ARTIFACTS, Airflow, Dagster

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "stack.py"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def stack() -> Iterator[dict[str, Any]]:
    """The running stack's state (``stack.json``: URLs, DSNs, environment, pids)."""
    ARTIFACTS.mkdir(exist_ok=True)
    # Not under pytest's basetemp: other pytest sessions of this machine prune old ones.
    state_dir = Path(tempfile.mkdtemp(prefix="pgferry-stack-test-"))
    env = {**os.environ, "PGFERRY_STACK_DIR": str(state_dir)}
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "start"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    TIMINGS["stack_start_s"] = round(time.monotonic() - began, 1)
    if proc.returncode != 0:
        logs = state_dir / "logs"
        tails = "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(logs.glob("*"))
        )
        subprocess.run([sys.executable, str(SCRIPT), "stop"], env=env, cwd=REPO, check=False)
        pytest.fail(f"the stack did not start:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}{tails}")
    state: dict[str, Any] = json.loads((state_dir / "stack.json").read_text())
    state["state_dir"] = state_dir
    state["script_env"] = env
    try:
        yield state
    finally:
        began = time.monotonic()
        subprocess.run([sys.executable, str(SCRIPT), "stop"], env=env, cwd=REPO, check=False,
                       timeout=180)  # fmt: skip
        TIMINGS["stack_stop_s"] = round(time.monotonic() - began, 1)
        # The logs are worth keeping next to the screenshots when something failed.
        for log in (state_dir / "logs").glob("*.log"):
            (ARTIFACTS / "logs").mkdir(exist_ok=True)
            (ARTIFACTS / "logs" / log.name).write_bytes(log.read_bytes()[-2_000_000:])
        (ARTIFACTS / "timings.json").write_text(json.dumps(TIMINGS, indent=2))
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow(stack: dict[str, Any]) -> Airflow:
    return Airflow(stack["airflow_url"])


@pytest.fixture(scope="session")
def dagster(stack: dict[str, Any]) -> Dagster:
    return Dagster(stack["dagster_url"])


@pytest.fixture(autouse=True)
def _timed(request: pytest.FixtureRequest) -> Iterator[None]:
    began = time.monotonic()
    yield
    TIMINGS[request.node.name] = round(time.monotonic() - began, 1)
