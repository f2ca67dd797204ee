"""Run one method in a fresh subprocess and measure it from the outside.

* Wall time: from starting the child to reaping it (the whole process, start-up included, as
  in the reference figures).
* Client CPU: the delta of ``getrusage(RUSAGE_CHILDREN)`` around the child. It counts the
  child and every descendant the child waited for (its process-pool workers).
* Peak RSS of the client tree: the child and its descendants, their RSS summed, sampled every
  50 ms with psutil; the child also reports its own ``ru_maxrss``.
* Server CPU: user + system time of the postmaster, of its live children and of its reaped
  children (``children_user``/``children_system``), before and after; only for a server on
  this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

try:
    import psutil  # type: ignore[import-untyped]
except ImportError:  # psutil comes with the dev extra; without it some figures are n/a
    psutil = None

__all__ = ["ChildRun", "ServerCpu", "child_environment", "find_postmaster", "run_child", "warm_up"]

SAMPLE_INTERVAL = 0.05


@dataclass
class ChildRun:
    """What one method's subprocess did, measured from the outside.

    Attributes:
        returncode: The child's exit status (negative: killed by that signal).
        wall_s: Seconds from start to exit of the child process.
        user_s: User CPU seconds of the child and its waited-for descendants.
        sys_s: System CPU seconds, likewise.
        peak_tree_rss: Highest sum of RSS over the child and its descendants (bytes), or
            ``None`` without psutil.
        server_cpu_s: CPU seconds the server spent meanwhile, or ``None`` when not measurable.
        report: What the child printed: its own timings, ``ru_maxrss`` and method details.
        stderr: The tail of the child's standard error.
        timed_out: The child was killed after the timeout.
    """

    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_tree_rss: int | None
    server_cpu_s: float | None
    report: dict[str, Any] = field(default_factory=dict)
    stderr: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """The child exited cleanly and reported."""
        return self.returncode == 0 and not self.timed_out and bool(self.report)


class _TreeRss(threading.Thread):
    """Samples the summed RSS of a process and its descendants until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.peak = 0
        self._pid = pid
        self._done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self._pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            total = 0
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                break  # the child has exited
            for proc in tree:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue  # a worker that just exited
            self.peak = max(self.peak, total)
            self._done.wait(SAMPLE_INTERVAL)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def find_postmaster(backend_pid: int) -> int | None:
    """The postmaster of ``backend_pid`` if that backend is a postgres process on this machine."""
    if psutil is None:
        return None
    try:
        parent = psutil.Process(backend_pid).parent()
        if parent is None or "postgres" not in parent.name() + " ".join(parent.cmdline()):
            return None
        return int(parent.pid)
    except psutil.Error:
        return None


class ServerCpu:
    """Cumulative CPU seconds of a local PostgreSQL server (postmaster and all it started)."""

    def __init__(self, postmaster_pid: int | None) -> None:
        self.pid = postmaster_pid if psutil is not None else None

    def seconds(self) -> float | None:
        """User + system seconds so far, or ``None`` when the server is not measurable."""
        if self.pid is None:
            return None
        try:
            master = psutil.Process(self.pid)
            times = master.cpu_times()
            total = times.user + times.system + times.children_user + times.children_system
            for child in master.children():
                try:
                    ct = child.cpu_times()
                except psutil.Error:
                    continue
                total += ct.user + ct.system
        except psutil.Error:
            return None
        return float(total)

    def settle(self, database: str, timeout: float = 3.0) -> None:
        """Wait until no client backend connected to ``database`` is left.

        A backend exits shortly after its client disconnects; its CPU time is counted only
        once the postmaster has reaped it, so the "after" reading waits for that. The parent
        holds no connection while a method runs, so every such backend is the child's.
        """
        if self.pid is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                titles = [" ".join(c.cmdline()) for c in psutil.Process(self.pid).children()]
            except psutil.Error:
                return
            marker = f" {database} "
            if not any(marker in t and "autovacuum" not in t for t in titles):
                return
            time.sleep(0.02)


def child_environment(pycache: str) -> dict[str, str]:
    """The environment of every child: bytecode cached in ``pycache``.

    A normal installation has its modules compiled once; an environment that forbids
    bytecode files (``PYTHONDONTWRITEBYTECODE``, as in some containers) would make every
    child compile pgferry and the benchmark from source again. The cache lives outside the
    repository and is filled by :func:`warm_up` before the first measured run.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def warm_up(modules: list[str], *, env: dict[str, str], cwd: str) -> None:
    """Import ``modules`` once in a child, unmeasured, so that their bytecode is cached."""
    code = "; ".join(f"import {m}" for m in modules)
    subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, check=True, timeout=300)


def run_child(
    config: dict[str, Any],
    *,
    timeout: float,
    server: ServerCpu,
    cwd: str,
    env: dict[str, str] | None = None,
) -> ChildRun:
    """Run ``python -m benchmarks.child`` with ``config`` on its stdin and measure it.

    The child runs in a session of its own, so that a timeout or a Ctrl-C here kills it and its
    pool workers together (by its process-group id) and nothing else.
    """
    server_before = server.seconds()
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    sampler = _TreeRss(proc.pid) if psutil is not None else None
    if sampler is not None:
        sampler.start()
    timed_out = False
    try:
        out, err = proc.communicate(json.dumps(config), timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        out, err = proc.communicate()
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        wall = time.perf_counter() - start
        peak = sampler.stop() if sampler is not None else None
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server.settle(config["database"])
    server_after = server.seconds()
    report: dict[str, Any] = {}
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            report = json.loads(line)
            break
    return ChildRun(
        returncode=proc.returncode,
        wall_s=wall,
        user_s=usage_after.ru_utime - usage_before.ru_utime,
        sys_s=usage_after.ru_stime - usage_before.ru_stime,
        peak_tree_rss=peak or None,
        server_cpu_s=(
            server_after - server_before
            if server_before is not None and server_after is not None
            else None
        ),
        report=report,
        stderr="\n".join(err.strip().splitlines()[-20:]),
        timed_out=timed_out,
    )


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
