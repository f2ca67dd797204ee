"""A description of the machine and software, for the report."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["describe_machine", "git_revision"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe_machine(event_loop: str) -> dict[str, str]:
    """CPU, cores, RAM, OS and the versions of Python and the client libraries."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    ram = _ram_gib()
    return {
        "CPU": _cpu_model(),
        "cores": f"{cores} ({usable} usable by this process)",
        "RAM": f"{ram:.1f} GiB" if ram is not None else "unknown",
        "OS": platform.platform(),
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "client libraries": f"asyncpg {_version('asyncpg')}, uvloop {_version('uvloop')}, "
        f"psutil {_version('psutil')}; event loop of every method: {event_loop}",
    }


def git_revision(repo: Path) -> str:
    """``git abc1234`` plus ``, modified`` when tracked files differ; read-only git commands."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        # --no-optional-locks: never write the index (other people work in this clone).
        status = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "git commit unknown"
    return f"git {head}{', modified' if status else ''}"
