"""Running Airflow for the example DAGs: a temporary AIRFLOW_HOME and SQLite metadata DB.

``airflow db migrate`` runs once per session (see ``conftest.py``). Every ``airflow`` command
runs as a subprocess with the repository's ``dags/`` folder, the connections ``pg_source`` and
``pg_target`` (two fresh databases of the test server, given as ``AIRFLOW_CONN_*`` variables)
and an OpenLineage file transport, so that tests can read back what Airflow recorded: the
metadata DB (task instances, XComs, Asset events) and the OpenLineage events.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
AIRFLOW = Path(sys.executable).with_name("airflow")
# The target connection carries a password (the test server trusts local connections, so it
# is never checked): no log line, XCom, rendered field, Asset event or lineage event may show it.
TARGET_PASSWORD = "s3cr3t-Pw"

SEED = (DAGS / "seed.sql").read_text()


@dataclass
class AirflowEnv:
    """The session's Airflow: run commands, read the metadata DB and the lineage events."""

    home: Path
    env: dict[str, str]
    source: str
    target: str
    lineage_file: Path
    host: str
    port: int
    source_db: str
    target_db: str
    outputs: list[str] = field(default_factory=list)

    def airflow(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 240,
        env: dict[str, str] | None = None,
    ) -> str:
        """Run ``airflow ARGS``; return its output (stdout and stderr)."""
        try:
            proc = subprocess.run(
                [str(AIRFLOW), *args],
                env={**self.env, **(env or {})},
                cwd=self.home,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            partial = "".join(
                x.decode(errors="replace") if isinstance(x, bytes) else x or ""
                for x in (exc.stdout, exc.stderr)
            )
            tail = "\n".join(partial.splitlines()[-60:])
            pytest.fail(f"airflow {' '.join(args)} timed out after {timeout:g} s:\n{tail}")
        output = proc.stdout + proc.stderr
        self.outputs.append(output)
        if check and proc.returncode != 0:
            tail = "\n".join(output.splitlines()[-60:])
            pytest.fail(f"airflow {' '.join(args)} exited with {proc.returncode}:\n{tail}")
        return output

    def dags_test(
        self, dag_id: str, logical_date: str, *options: str, **kw: Any
    ) -> tuple[str, str]:
        """``airflow dags test``; return the run id and the output."""
        output = self.airflow("dags", "test", *options, dag_id, logical_date, **kw)
        run_id = self.query(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", dag_id
        )[0][0]
        return run_id, output

    def dags_test_with_executor(
        self, dag_id: str, logical_date: str, env: dict[str, str], timeout: float = 150
    ) -> tuple[str, str]:
        """``airflow dags test --use-executor``: tasks run in Airflow's real task runner.

        After the DAG run has finished, the command's LocalExecutor sometimes hangs on shutdown
        (joining an idle worker), so the run is watched in the metadata DB and the command's
        process group is stopped once the run is over.
        """
        (last,) = self.query("SELECT coalesce(max(id), 0) FROM dag_run")[0]
        log_path = self.home / f"executor-{dag_id}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [str(AIRFLOW), "dags", "test", "--use-executor", dag_id, logical_date],
                env={**self.env, **env},
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        finished: float | None = None
        try:
            while proc.poll() is None:
                now = time.monotonic()
                states = self.query(
                    "SELECT state FROM dag_run WHERE dag_id = ? AND id > ?", dag_id, last
                )
                if finished is None and states and states[0][0] in ("success", "failed"):
                    finished = now
                if (finished is not None and now - finished > 10) or now > deadline:
                    break
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        output = log_path.read_text(errors="replace")
        self.outputs.append(output)
        if finished is None:
            tail = "\n".join(output.splitlines()[-60:])
            pytest.fail(f"the {dag_id} run did not finish within {timeout:g} s:\n{tail}")
        run_id = self.query("SELECT run_id FROM dag_run WHERE dag_id = ? AND id > ?", dag_id, last)
        return run_id[0][0], output

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on the SQLite metadata database."""
        with sqlite3.connect(self.home / "airflow.db") as db:
            return db.execute(sql, args).fetchall()

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        """The ``return_value`` XCom of a task instance."""
        rows = self.query(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? "
            "AND map_index = ? AND key = 'return_value'",
            dag_id,
            run_id,
            task_id,
            map_index,
        )
        assert rows, f"no return_value XCom for {dag_id}.{task_id}[{map_index}] in {run_id}"
        return json.loads(rows[0][0])

    def asset_events(self, uri: str) -> list[dict[str, Any]]:
        """Events of the Asset with this URI, oldest first."""
        rows = self.query(
            "SELECT e.extra, e.source_dag_id, e.source_task_id, e.source_run_id, "
            "e.source_map_index FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.uri = ? ORDER BY e.id",
            uri,
        )
        keys = ("extra", "dag_id", "task_id", "run_id", "map_index")
        return [
            {**dict(zip(keys, row, strict=True)), "extra": json.loads(row[0] or "{}")}
            for row in rows
        ]

    def task_log(self, dag_id: str, run_id: str, task_id: str, attempt: int = 1) -> str:
        """The messages of a task's log file (written when a real task runner ran it)."""
        path = (
            self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
            / f"attempt={attempt}.log"
        )  # fmt: skip
        lines = []
        for line in path.read_text().splitlines():
            try:
                lines.append(str(json.loads(line).get("event", "")))
            except ValueError:
                lines.append(line)
        return "\n".join(lines)

    def table_uri(self, database: str, table: str) -> str:
        schema, name = table.split(".")
        return f"postgres://{self.host}:{self.port}/{database}/{schema}/{name}"

    def lineage_events(self) -> list[dict[str, Any]]:
        """Every OpenLineage event written so far."""
        if not self.lineage_file.exists():
            return []
        lines = self.lineage_file.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
