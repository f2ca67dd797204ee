"""One range of a parallel run: a complete reader → transform → loader pipeline.

A parallel run (:mod:`pgferry.engine.parallel`) splits the key into ranges and runs each range
through :func:`run_range`, the same stages as a single pipeline: its own source connection reading
inside the coordinator's exported snapshot, the transform inline, its own target connection
committing each batch with the range's own ledger row. No row crosses a process boundary.

The coordinator runs one range in its own process and each other range in a worker process
(:func:`main`), which reads a :class:`RangeTask` as one JSON line on stdin
and writes events as JSON lines on a pipe of its own (the transform may print to stdout):

* ``{"event": "ready"}`` once the snapshot is imported;
* ``{"event": "batch", "rows_read": …, "rows_written": …, …}`` after every committed batch
  (the range's totals so far);
* ``{"event": "log", "level": …, "message": …}`` for pgferry's log records;
* ``{"event": "done", "stages": …}`` at the end, or ``{"event": "error", "error": …}`` with the
  pickled :class:`~pgferry.errors.PgferryError`.

A worker dies with its parent (``PR_SET_PDEATHSIG`` on Linux, and an end-of-file on stdin
anywhere), ignores Ctrl-C (the coordinator decides) and, on SIGTERM, rolls back the batch in
flight and exits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import pickle
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pgferry import locks
from pgferry.connection import close_quietly
from pgferry.engine.connect import connect_side
from pgferry.engine.host import loop_factory, relaxed_gc
from pgferry.engine.lanes.base import LaneContext
from pgferry.engine.lanes.rows import run_rows
from pgferry.engine.plan import plan_source
from pgferry.engine.progress import Progress
from pgferry.engine.sinks.postgres import PostgresSink
from pgferry.errors import PgferryError
from pgferry.result import RunResult
from pgferry.retry import as_pgferry_error
from pgferry.spec import Job
from pgferry.state import StateStore

__all__ = ["RangeTask", "run_in_subprocess", "run_range", "task_json"]

log = logging.getLogger("pgferry")

Emit = Callable[[dict[str, Any]], None]


@dataclass
class RangeTask:
    """What one pipeline of a parallel run needs, as plain data.

    Attributes:
        job: The job as ``Job.model_dump(mode="json")``, with the range as its ``partition``
            (whose name is the range's ledger row), ``workers: 0`` and ``pipelines: 1``.
        snapshot: The coordinator's exported snapshot.
        columns: The target columns, in order (the coordinator prepared the target).
        run_id: The run's id, recorded with the range's ledger row.
        lock: The advisory lock every pipeline of the job holds in shared mode while it runs.
        sys_path: The coordinator's ``sys.path`` (to import the transform as it did).
        parent: The coordinator's pid: a worker whose parent is already gone stops at once.
        log_level: The coordinator's effective level for the ``pgferry`` logger.
    """

    job: dict[str, Any]
    snapshot: str
    columns: list[str]
    run_id: str
    lock: str
    sys_path: list[str]
    parent: int
    log_level: int = logging.WARNING


async def run_range(job: Job, task: RangeTask, emit: Emit) -> None:
    """Run one range of a parallel run to its end, emitting events; raises on failure."""
    assert job.partition is not None
    result = RunResult(job=job.name, run_id=task.run_id, mode=job.target.mode)
    result.partition = job.partition.name
    store = StateStore(job.state_schema)
    src = tgt = None

    def on_progress(_: Progress) -> None:
        emit(
            {
                "event": "batch",
                "rows_read": result.rows_read,
                "rows_written": result.rows_written,
                "rows_rejected": result.rows_rejected,
                "batches": result.batches,
            }
        )

    try:
        src = await connect_side(job, "source", purpose="reader")
        tgt = await connect_side(job, "target", purpose="loader")
        await locks.hold_shared(tgt, task.lock)
        ledger = await store.read(tgt, job.name, result.partition)
        plan = await plan_source(src, job, ledger)
        sink = PostgresSink(job, tgt, store, result, plan)
        ctx = LaneContext(
            job,
            src,
            sink,
            plan,
            result,
            on_progress,
            snapshot=task.snapshot or None,
            prepared=task.columns or None,
            on_snapshot=lambda: emit({"event": "ready"}),
        )
        await run_rows(ctx)
        emit(
            {
                "event": "done",
                "stages": {k: [s.busy_s, s.wait_s] for k, s in result.stages.items()},
            }
        )
    finally:
        await close_quietly(src)
        await close_quietly(tgt)


# --- The coordinator's side -------------------------------------------------------------------

# Not ``-m pgferry.engine.worker``: importing the package first would import the module twice.
_WORKER_MAIN = "import sys; from pgferry.engine.worker import main; sys.exit(main())"
_STOP_TIMEOUT = 10.0


async def run_in_subprocess(task: RangeTask, emit: Emit, label: str) -> None:
    """Run one range in a worker process, relay its events to ``emit``; stop it if cancelled.

    Raises:
        PgferryError: The worker's own error, or how it ended (``label`` names it).
    """
    job_name = str(task.job.get("name"))
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER_MAIN,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C goes to the coordinator, which stops the workers
            limit=1 << 20,
        )
    except OSError as exc:  # not transient: a retry would meet the same executable
        raise PgferryError(
            f"cannot start a pipeline process ({sys.executable!r}: {exc}); set pipelines: 1 "
            "to run in this process only",
            job=job_name,
        ) from exc
    assert proc.stdin is not None and proc.stdout is not None
    error: PgferryError | None = None
    try:
        try:
            proc.stdin.write(task_json(task))
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it ended already: its exit code says how
        while line := await proc.stdout.readline():
            event = _decode(line)
            if event.get("event") == "error":
                error = pickle.loads(base64.b64decode(event["error"]))  # our own child's
            elif event:
                emit(event)
        code = await proc.wait()
    finally:
        if proc.returncode is None:
            await asyncio.shield(_stop(proc))
    if error is not None:
        raise error
    if code != 0:
        how = (
            f"was killed by signal {-code} (out of memory?)"
            if code < 0
            else f"ended with exit code {code} (its error, if any, is on stderr)"
        )
        raise PgferryError(f"{label} (process {proc.pid}) {how}", job=job_name)


def _decode(line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (the worker rolls back its batch in flight and exits); SIGKILL if it hangs."""
    try:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT)
    except ProcessLookupError:
        return
    except TimeoutError:
        proc.kill()
        await proc.wait()


# --- The worker process ----------------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


class _Forward(logging.Handler):
    def __init__(self, emit: Emit) -> None:
        super().__init__()
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self._emit({"event": "log", "level": record.levelno, "message": record.getMessage()})


async def _main_async(task: RangeTask, emit: Emit) -> None:
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    assert current is not None
    loop.add_signal_handler(signal.SIGTERM, current.cancel)

    async def watch_parent() -> None:
        # End of file on stdin: the coordinator is gone (its end of the pipe closed).
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        await reader.read()
        current.cancel()

    watcher = asyncio.create_task(watch_parent())
    try:
        job = Job.from_dict(task.job)
        await run_range(job, task, emit)
    finally:
        watcher.cancel()


def main() -> int:
    """Entry point of a worker process; exit code 0 on success."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    # Events go to a pipe of their own; whatever the transform prints goes to stderr.
    events = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    line = sys.stdin.buffer.readline()
    if not line:
        return 3
    task = RangeTask(**json.loads(line))
    if os.getppid() != task.parent:
        return 3  # the coordinator died before this process could follow it

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event, default=str).encode() + b"\n")

    sys.path[:] = task.sys_path
    logger = logging.getLogger("pgferry")
    logger.setLevel(task.log_level)
    logger.addHandler(_Forward(emit))
    logger.propagate = False
    job_name = str(task.job.get("name", ""))
    try:
        with relaxed_gc(), asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(_main_async(task, emit))
    except (asyncio.CancelledError, KeyboardInterrupt):
        return 4
    except BaseException as exc:
        err = as_pgferry_error(exc, job_name)
        try:
            payload = base64.b64encode(pickle.dumps(err)).decode()
        except Exception:
            payload = base64.b64encode(pickle.dumps(PgferryError(str(err), job=job_name))).decode()
        emit({"event": "error", "error": payload})
        return 1
    return 0


def task_json(task: RangeTask) -> bytes:
    """The line a worker reads on stdin."""
    return json.dumps(asdict(task), default=str).encode() + b"\n"


if __name__ == "__main__":
    sys.exit(main())
