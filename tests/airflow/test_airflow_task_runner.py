"""The operator in Airflow's real task runner: an executor, a supervisor, a forked task process.

``airflow dags test`` runs tasks in its own process; ``--use-executor`` hands them to the
LocalExecutor instead, whose supervisor runs each task in a child process talking to the
execution API, as in production. The transform's process pool must start there too.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow_harness import AirflowEnv

from helpers import fetch

pytestmark = pytest.mark.slow


def test_transform_pool_starts_in_the_task_runner(
    airflow_env: AirflowEnv, execution_api: dict[str, str]
) -> None:
    env = airflow_env
    dag = "pgferry_full_copy"
    run_id, _ = env.dags_test_with_executor(dag, "2024-01-09", execution_api)
    states = env.query(
        "SELECT state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?", dag, run_id
    )
    log = env.task_log(dag, run_id, "copy_customers")
    assert states == [("success", 1)], log[-3000:]
    result: dict[str, Any] = env.xcom(dag, run_id, "copy_customers")
    assert (result["workers"], result["rows_written"]) == (2, 2000)
    assert "transform in a pool of 2 processes" in log
    # The workers really did the work: none died and handed their batches to the parent.
    assert "the worker processes of transform" not in log
    assert "2000 rows read, 2000 written" in log
    assert len(fetch(env.target, "SELECT 1 FROM customers_clean")) == 2000
