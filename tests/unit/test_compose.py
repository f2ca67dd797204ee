"""docker-compose.yml cannot be run here (no Docker engine), so it is checked by reading it."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DATABASES = {"source", "warehouse", "metadata"}


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_every_service_has_a_pinned_image_or_a_build() -> None:
    for name, svc in services().items():
        image = svc.get("image")
        assert image or svc.get("build"), f"{name}: neither image nor build"
        if image and not svc.get("build"):
            repo, _, tag = image.rpartition(":")
            assert repo and tag and tag != "latest", f"{name}: image {image!r} is not pinned"
            assert re.match(r"\d+", tag), f"{name}: tag {tag!r} does not pin a version"


def test_databases_have_health_checks_and_named_volumes() -> None:
    svcs = services()
    volumes = set(compose()["volumes"])
    for name in DATABASES:
        svc = svcs[name]
        assert svc["image"].startswith("postgres:18"), name
        assert "pg_isready" in " ".join(svc["healthcheck"]["test"]), name
        data = [v for v in svc["volumes"] if v.endswith(":/var/lib/postgresql")]
        assert data and data[0].split(":")[0] in volumes, f"{name}: no named data volume"


def test_dependents_wait_for_healthy_databases() -> None:
    for name in ("airflow", "dagster-webserver", "dagster-daemon"):
        deps = services()[name]["depends_on"]
        assert set(deps) == DATABASES, name
        assert all(d["condition"] == "service_healthy" for d in deps.values()), name


def test_every_variable_is_in_env_example_and_no_secret_is_committed() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    defined = env_example()
    assert used, "the compose file uses no variables?"
    assert used <= set(defined), f"missing from .env.example: {sorted(used - set(defined))}"
    assert not (ROOT / ".env").exists() or ".env" in (ROOT / ".gitignore").read_text()
    for key, value in defined.items():
        if "PASSWORD" in key:
            assert value.startswith("change-me"), f"{key} looks like a real secret"
    # No password is written into the compose file itself.
    assert not re.search(r"PASSWORD:\s*[^$\s]", text)


def test_mounted_paths_exist() -> None:
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith((".", "/")):
                assert (ROOT / host).exists(), f"{name}: {host} does not exist"
        build = svc.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name


def test_orchestrators_point_at_the_repository_examples() -> None:
    svcs = services()
    airflow = svcs["airflow"]
    assert "./dags:/opt/airflow/dags:ro" in airflow["volumes"]
    assert airflow["environment"]["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags"
    assert airflow["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert "@metadata:5432/airflow" in airflow["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    # The connections the example DAGs use.
    dag_conns = set(
        re.findall(
            r'conn_id="(\w+)"|PgferryHook\("(\w+)"\)',
            "\n".join(p.read_text() for p in (ROOT / "dags").glob("*.py")),
        )
    )
    conn_ids = {a or b for a, b in dag_conns}
    assert conn_ids, "no connection ids found in dags/"
    for conn_id in conn_ids:
        assert f"AIRFLOW_CONN_{conn_id.upper()}" in airflow["environment"], conn_id
    for name in ("dagster-webserver", "dagster-daemon"):
        svc = svcs[name]
        assert "./dagster_defs:/opt/dagster/app/dagster_defs:ro" in svc["volumes"]
        assert "./dagster_defs/dagster.yaml:/opt/dagster/home/dagster.yaml:ro" in svc["volumes"]
        assert svc["environment"]["DAGSTER_HOME"] == "/opt/dagster/home"
        assert svc["command"][-2:] == ["-m", "dagster_defs"]
    # dagster.yaml reads exactly the variables the services set.
    wanted = set(re.findall(r"\{env: (\w+)\}", (ROOT / "dagster_defs/dagster.yaml").read_text()))
    assert wanted <= set(svcs["dagster-webserver"]["environment"])
    # The DSN variables the example definitions read.
    defs = (ROOT / "dagster_defs" / "definitions.py").read_text()
    for var in set(re.findall(r'EnvVar\("(\w+)"\)', defs)):
        assert var in svcs["dagster-webserver"]["environment"], var


def test_dagster_and_webserver_pinned_to_the_same_release() -> None:
    dockerfile = (ROOT / "docker" / "dagster.Dockerfile").read_text()
    versions = dict(re.findall(r'"(dagster|dagster-webserver)==([\d.]+)"', dockerfile))
    assert versions["dagster"] == versions["dagster-webserver"]


def test_init_scripts_seed_what_the_examples_read() -> None:
    source_sql = (ROOT / "docker" / "initdb" / "source.sql").read_text()
    for database in ("airflow_source", "dagster_source"):
        assert f"CREATE DATABASE {database};" in source_sql
        assert database in services()["airflow"]["environment"]["AIRFLOW_CONN_PG_SOURCE"] or (
            database in services()["dagster-webserver"]["environment"]["PGFERRY_SOURCE_DSN"]
        )
    warehouse_sql = (ROOT / "docker" / "initdb" / "warehouse.sql").read_text()
    assert "CREATE DATABASE dagster_warehouse;" in warehouse_sql
    assert "CREATE DATABASE dagster;" in (ROOT / "docker" / "initdb" / "metadata.sql").read_text()


CELERY = {
    "redis",
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker-1",
    "airflow-worker-2",
}


def test_celery_profile_is_the_celery_executor_topology() -> None:
    svcs = services()
    in_profile = {n for n, s in svcs.items() if "celery" in s.get("profiles", [])}
    assert in_profile == CELERY
    # The standalone Airflow is the other profile, the default one of .env.example: the two
    # never run against the same metadata database together.
    assert svcs["airflow"]["profiles"] == ["local"]
    assert env_example()["COMPOSE_PROFILES"] == "local"
    assert svcs["redis"]["image"].startswith("redis:7")
    assert "redis-cli" in svcs["redis"]["healthcheck"]["test"]
    commands = {n: svcs[n]["command"] for n in CELERY - {"redis"}}
    assert commands == {
        "airflow-init": ["db", "migrate"],
        "airflow-api-server": ["api-server"],
        "airflow-scheduler": ["scheduler"],
        "airflow-dag-processor": ["dag-processor"],
        "airflow-worker-1": ["celery", "worker"],
        "airflow-worker-2": ["celery", "worker"],
    }
    assert svcs["airflow-worker-1"]["hostname"] != svcs["airflow-worker-2"]["hostname"]
    standalone = svcs["airflow"]["environment"]
    for name in CELERY - {"redis"}:
        svc = svcs[name]
        env = svc["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0", name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "${AIRFLOW_JWT_SECRET}", name
        # The same DAGs and connections as the standalone service.
        assert "./dags:/opt/airflow/dags:ro" in svc["volumes"], name
        for key in ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                    "AIRFLOW_CONN_PG_SOURCE", "AIRFLOW_CONN_PG_TARGET"):  # fmt: skip
            assert env[key] == standalone[key], (name, key)
        if name != "airflow-init":
            deps = svc["depends_on"]
            assert set(deps) == DATABASES | {"redis", "airflow-init"}, name
            assert deps["airflow-init"]["condition"] == "service_completed_successfully"
    assert svcs["airflow-api-server"]["ports"] == ["${AIRFLOW_PORT}:8080"]


def test_make_stack_sets_what_the_celery_profile_sets() -> None:
    """scripts/stack.py (``make stack``) runs the celery topology without Docker: every
    Airflow variable of the profile is set there too, pointed at this machine."""
    import importlib.util

    path = ROOT / "scripts" / "stack.py"
    spec = importlib.util.spec_from_file_location("pgferry_stack_script", path)
    assert spec and spec.loader
    stack = importlib.util.module_from_spec(spec)
    sys.modules["pgferry_stack_script"] = stack  # dataclasses look their module up
    try:
        spec.loader.exec_module(stack)
    finally:
        del sys.modules["pgferry_stack_script"]
    dsn = "postgresql://postgres@127.0.0.1:5555/{}"
    names = ("airflow_source", "warehouse", "airflow_metadata", "dagster_source",
             "dagster_warehouse", "dagster_metadata")  # fmt: skip
    dsns = {k: dsn.format(k) for k in names}
    airflow = stack.airflow_env(dsns, {"airflow": 8080, "redis": 6390})
    profile = services()["airflow-scheduler"]["environment"]
    assert set(profile) <= set(airflow)
    assert airflow["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert airflow["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert airflow["AIRFLOW_CONN_PG_SOURCE"].endswith("/airflow_source")
    dagster = stack.dagster_env(dsns)
    assert set(services()["dagster-webserver"]["environment"]) <= set(dagster)
    assert dagster["PGFERRY_SOURCE_DSN"].endswith("/dagster_source")
