"""The session's Airflow installation (see ``airflow_harness``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from airflow_harness import AIRFLOW, DAGS, SEED, TARGET_PASSWORD, AirflowEnv

from helpers import dsn_with_database, execute


@pytest.fixture(scope="session")
def airflow_env(
    pg_server_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowEnv]:
    """Airflow with the repository's DAGs, two seeded databases and their connections."""
    home = tmp_path_factory.mktemp("airflow_home")
    stem = f"af_{uuid.uuid4().hex[:8]}"
    source_db, target_db = f"{stem}_src", f"{stem}_tgt"
    for name in (source_db, target_db):
        execute(pg_server_dsn, f'CREATE DATABASE "{name}"')
    source = dsn_with_database(pg_server_dsn, source_db)
    target = dsn_with_database(pg_server_dsn, target_db)
    execute(source, SEED)

    parts = urllib.parse.urlsplit(pg_server_dsn)
    host, port, user = parts.hostname or "127.0.0.1", parts.port or 5432, parts.username or ""
    lineage_file = home / "openlineage.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        AIRFLOW__OPENLINEAGE__NAMESPACE="pgferry-tests",
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
            {"type": "file", "log_file_path": str(lineage_file), "append": True}
        ),
        AIRFLOW_CONN_PG_SOURCE=f"postgres://{user}@{host}:{port}/{source_db}",
        AIRFLOW_CONN_PG_TARGET=f"postgres://{user}:{TARGET_PASSWORD}@{host}:{port}/{target_db}",
        PYTHONWARNINGS="ignore",
    )
    airflow = AirflowEnv(
        home=home,
        env=env,
        source=source,
        target=target,
        lineage_file=lineage_file,
        host=host,
        port=port,
        source_db=source_db,
        target_db=target_db,
    )
    airflow.airflow("db", "migrate")
    try:
        yield airflow
    finally:
        for name in (source_db, target_db):
            execute(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def execution_api(airflow_env: AirflowEnv) -> Iterator[dict[str, str]]:
    """An ``airflow api-server``, so that an executor can run tasks in Airflow's task runner.

    Returns the environment that points ``airflow`` commands at it.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/"}
    log = (airflow_env.home / "api-server.log").open("w")
    server = subprocess.Popen(
        [str(AIRFLOW), "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env={**airflow_env.env, **env},
        cwd=airflow_env.home,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/version", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    tail = (airflow_env.home / "api-server.log").read_text()[-3000:]
                    pytest.fail(f"airflow api-server did not start:\n{tail}")
                time.sleep(0.5)
        yield env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
