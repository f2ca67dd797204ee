"""The transform process pool: spawned workers that import the transform by its path.

Workers never re-import the parent's ``__main__`` (in an Airflow task that is the ``airflow``
command, which cannot be imported there), and a pool whose workers die hands its batches to a
thread of the parent instead of failing the run. Everything that runs in a worker is a top-level
function taking and returning plain data (column names, tuples, an import path).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing.context as mp_context
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing.connection import wait as wait_for_sentinels
from typing import Any, TypeVar

from pgferry.engine.functions import (
    Columns,
    Rows,
    TransformReject,
    apply_transform,
    import_path_of,
    is_batch_transform,
    load_transform,
)
from pgferry.engine.host import cores
from pgferry.engine.items import TransformOutput

__all__ = [
    "TransformPool",
    "can_start_pool",
    "default_pool_size",
    "measure_pool_benefit",
    "pool_unpicklable_reason",
    "run_in_worker",
    "start_pool",
]

log = logging.getLogger("pgferry")

T = TypeVar("T")


_worker_fn: Callable[..., Any] | None = None
_worker_is_batch = False


def _init_worker(import_path: str) -> None:
    """Pool initializer: import the transform once per worker process."""
    global _worker_fn, _worker_is_batch
    # Ctrl-C reaches the whole process group; the parent decides how the pool shuts down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_fn = load_transform(import_path)
    _worker_is_batch = is_batch_transform(_worker_fn)


def run_in_worker(
    columns: Columns, rows: Rows, key: Sequence[str] | None, collect_rejects: bool
) -> TransformOutput:
    """Pool task: transform one batch; returns columns, rows, CPU seconds and rejects."""
    assert _worker_fn is not None, "pool worker was not initialised"
    return _timed(_worker_fn, columns, rows, key, collect_rejects)


def _timed(
    fn: Callable[..., Any], columns: Columns, rows: Rows, key: Any, collect_rejects: bool
) -> TransformOutput:
    # The calling thread's CPU time: a worker's only thread, or the parent's fallback thread.
    start = time.thread_time()
    rejects: list[TransformReject] | None = [] if collect_rejects else None
    out_cols, out_rows = apply_transform(fn, is_batch_transform(fn), columns, rows, key, rejects)
    return TransformOutput(out_cols, out_rows, time.thread_time() - start, rejects or [])


def can_start_pool() -> str | None:
    """``None`` if a process pool can start here, else the reason why not."""
    import multiprocessing

    if multiprocessing.current_process().daemon:
        return "this is a daemonic process, which may not have children"
    try:  # the pool's queues need semaphores, which some sandboxes lack (no /dev/shm)
        multiprocessing.get_context("spawn").Lock()
    except (OSError, ImportError, NotImplementedError) as exc:
        return f"processes cannot share a lock here ({type(exc).__name__}: {exc})"
    return None


def start_pool(import_path: str, workers: int, *, job: str | None = None) -> TransformPool:
    """A pool of ``workers`` spawned processes with the transform imported in each.

    ``spawn`` rather than ``fork``: the parent runs an event loop and may hold threads and
    sockets that a forked child must not inherit. ``sys.path`` travels with spawn, so a
    transform beside the job file is found; the parent's ``__main__`` does not.

    If the workers die (killed, out of memory, ``os._exit``…) or cannot start, the pool logs
    one warning naming ``job`` and transforms every batch not yet done, those in flight
    included, in this process: each future still gets its batch's result. A transform that
    raises fails its batch as in a worker.
    """
    return TransformPool(import_path, workers, job)


_main_lock = threading.Lock()


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Keep a process spawned meanwhile from re-importing this process's ``__main__``.

    A spawned child first imports its parent's main module (by ``__spec__`` or ``__file__``)
    as ``__mp_main__``. Pool workers need nothing from it, and importing it may fail (the
    ``airflow`` command, in a task) or rerun a script's top-level side effects. Other threads
    see the two attributes missing only while a worker starts; the lock keeps two starts from
    restoring each other's copy.
    """
    with _main_lock:
        namespace = getattr(sys.modules.get("__main__"), "__dict__", None)
        if namespace is None:
            yield
            return
        saved = {k: namespace[k] for k in ("__file__", "__spec__") if k in namespace}
        namespace.pop("__file__", None)
        namespace["__spec__"] = None  # spawn reads __spec__.name: None, not absent
        try:
            yield
        finally:
            namespace.pop("__spec__", None)
            namespace.update(saved)


class _WorkerProcess(mp_context.SpawnProcess):
    # Hooked on start(), where spawn reads __main__: it holds whenever the pool starts a
    # worker (on demand, at submit time, since Python 3.9). Pickled by name into the worker.
    def start(self) -> None:
        with _main_hidden():
            super().start()


class _WorkerContext(mp_context.SpawnContext):
    """Spawns the pool's workers and remembers them, for their exit codes and a final join."""

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[_WorkerProcess] = []

    # multiprocessing's contexts name their process factory ``Process``; an instance method
    # here (not the class attribute) lets this context remember what it started.
    def Process(self, *args: Any, **kwargs: Any) -> _WorkerProcess:  # type: ignore[override]
        proc = _WorkerProcess(*args, **kwargs)
        self.processes.append(proc)
        return proc


class _Fallback:
    """A pool's batches transformed in this process, once its workers are gone.

    One at a time in one thread: the transform never runs concurrently with itself, and the
    event loop keeps reading and committing meanwhile.
    """

    def __init__(self, import_path: str, job: str | None) -> None:
        self.import_path, self.job = import_path, job
        self.reason: str | None = None
        self._lock = threading.Lock()
        self._thread: ThreadPoolExecutor | None = None

    def engage(self, reason: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="pgferry-transform")
            self.reason = reason
        log.warning(
            "%sthe worker processes of transform %s are gone (%s); transforming the "
            "remaining batches in this process",
            f"job {self.job}: " if self.job else "",
            self.import_path,
            reason,
        )

    def run(self, outer: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        assert self._thread is not None
        try:
            done = self._thread.submit(self._call, outer, fn, args)
        except RuntimeError:  # shut down: the run is over, nobody waits for this batch
            outer.cancel()
            return
        done.add_done_callback(lambda f: f.cancelled() and outer.cancel())

    def _call(self, outer: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        if not outer.set_running_or_notify_cancel():
            return
        try:
            if fn is run_in_worker:  # which finds its transform in a worker's globals
                fn = functools.partial(_timed, load_transform(self.import_path))
            outer.set_result(fn(*args))
        except BaseException as exc:
            outer.set_exception(exc)

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=wait, cancel_futures=cancel_futures)


class TransformPool(ProcessPoolExecutor):
    """A process pool whose batches go to a thread of the parent once its workers are gone."""

    def __init__(self, import_path: str, workers: int, job: str | None) -> None:
        self._context = _WorkerContext()
        super().__init__(workers, self._context, _init_worker, (import_path,))
        self._fallback = _Fallback(import_path, job)

    @property
    def processes(self) -> list[_WorkerProcess]:
        """Every worker process the pool started (alive or not)."""
        return list(self._context.processes)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        assert not kwargs, "pool tasks take positional arguments"
        outer: Future[T] = Future()
        if self._fallback.reason is None:
            try:
                inner = super().submit(fn, *args)
            except (BrokenExecutor, OSError) as exc:
                self._engage(exc)
            else:
                task = [fn, args]
                inner.add_done_callback(lambda f: self._settle(f, outer, task))
                outer.add_done_callback(lambda f: f.cancelled() and inner.cancel())
                return outer
        self._fallback.run(outer, fn, args)
        return outer

    def _settle(self, inner: Future[Any], outer: Future[Any], task: list[Any]) -> None:
        fn, args = task
        task.clear()  # the batch's rows: not kept until its result is loaded
        exc = None if inner.cancelled() else inner.exception()
        if isinstance(exc, BrokenExecutor):
            self._engage(exc)
            self._fallback.run(outer, fn, args)
        elif inner.cancelled():
            outer.cancel()
        elif outer.set_running_or_notify_cancel():
            if exc is None:
                outer.set_result(inner.result())
            else:
                outer.set_exception(exc)

    def _engage(self, exc: BaseException) -> None:
        if self._fallback.reason is None:
            self._fallback.engage(self._why(exc))

    def _why(self, exc: BaseException) -> str:
        procs = [p for p in self.processes if p.pid is not None]
        # The pool may notice a worker's pipe close before the worker can be reaped.
        ready = set(wait_for_sentinels([p.sentinel for p in procs], timeout=1)) if procs else set()
        for proc in procs:
            if proc.sentinel in ready:
                proc.join()  # it has exited: this reaps it, for its exit code
            code = proc.exitcode
            if code and code < 0:
                name = next((s.name for s in signal.Signals if s == -code), f"signal {-code}")
                oom = " (out of memory?)" if code == -signal.SIGKILL else ""
                return f"pid {proc.pid} killed by {name}{oom}"
            if code:
                return f"pid {proc.pid} exited with code {code}"
        return f"{type(exc).__name__}: {exc}"

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        self._fallback.shutdown(wait, cancel_futures)

    def join_workers(self, timeout: float = 5.0) -> None:
        """Wait for every worker to exit after :meth:`shutdown`; kill those that hang."""
        for proc in self.processes:
            if proc.pid is None:
                continue
            proc.join(timeout=timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=timeout)


def default_pool_size() -> int:
    """Workers for ``workers: auto``: leave one core for the main process's decode and COPY."""
    return max(1, min(cores() - 1, 8))


_PICKLE_SAMPLE = 1_000


def measure_pool_benefit(
    transform_seconds: float, columns: Columns, rows: Rows, out_rows: Rows
) -> tuple[bool, str]:
    """Decide from the first batch whether the process pool pays for itself.

    Moving a batch to a worker and back costs a pickle and an unpickle in each direction,
    paid on the main process, which also still decodes and encodes every row. The pool helps
    only when the transform itself costs clearly more than that serialisation.

    Returns:
        Whether to use the pool, and a sentence explaining the measurement.
    """
    if not rows:
        return False, "first batch was empty"
    # A sample is enough to price the serialisation, and pickling a whole batch both ways
    # would cost as much as transforming it again.
    n_in = min(len(rows), _PICKLE_SAMPLE)
    n_out = min(len(out_rows), max(1, round(len(out_rows) * n_in / len(rows))))
    start = time.perf_counter()
    pickle.loads(pickle.dumps((columns, rows[:n_in]), protocol=pickle.HIGHEST_PROTOCOL))
    pickle.loads(pickle.dumps(out_rows[:n_out], protocol=pickle.HIGHEST_PROTOCOL))
    ser = (time.perf_counter() - start) / n_in
    per_row = transform_seconds / len(rows)
    use = per_row > 2 * ser and default_pool_size() >= 1 and cores() >= 2
    why = (
        f"transform {per_row * 1e6:.1f} µs/row vs pickling {ser * 1e6:.1f} µs/row "
        f"on {cores()} cores"
    )
    return use, why


def pool_unpicklable_reason(fn: Callable[..., Any] | str) -> str | None:
    """Why ``fn`` cannot run in a pool (no importable path), or ``None``."""
    if isinstance(fn, str):
        main = fn.partition(":")[0] in ("__main__", "__mp_main__")
        return "the transform is in __main__, which pool workers do not import" if main else None
    return None if import_path_of(fn) else "the transform is not importable by module path"
