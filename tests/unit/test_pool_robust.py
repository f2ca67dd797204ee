"""The transform pool without a database: workers that skip ``__main__``, workers that die."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import types
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pgferry import demo
from pgferry.engine import functions as tf
from pgferry.engine import pool as tpool
from pgferry.errors import TransformError

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"
COLUMNS = ("id", "name", "age", "email", "created_at", "score", "payload")
GONE = "worker processes of transform"


def batch(first: int, size: int = 50) -> list[tuple[Any, ...]]:
    return [(i, f"Ada {i}", 30, f"a{i}@x", None, 1.5, None) for i in range(first, first + size)]


def expected(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return tf.apply_transform(demo.split_name, False, COLUMNS, rows)[1]


def run_batches(pool: ProcessPoolExecutor, batches: list[list[tuple[Any, ...]]]) -> list[Any]:
    futures = [pool.submit(tpool.run_in_worker, COLUMNS, rows, ["id"], False) for rows in batches]
    return [f.result(timeout=120) for f in futures]


def gone_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if GONE in r.getMessage()]


# --- __main__ hidden while workers start -------------------------------------------------------


@pytest.fixture
def fake_main(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    main = types.ModuleType("__main__")
    main.__file__ = "/somewhere/script.py"
    main.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", main)
    return main


def test_main_hidden_then_restored(fake_main: types.ModuleType) -> None:
    spec = object()
    fake_main.__spec__ = spec  # type: ignore[assignment]
    with tpool._main_hidden():
        assert not hasattr(fake_main, "__file__")
        assert fake_main.__spec__ is None
    assert fake_main.__file__ == "/somewhere/script.py"
    assert fake_main.__spec__ is spec


def test_main_restored_after_an_error(fake_main: types.ModuleType) -> None:
    with pytest.raises(OSError, match="no more processes"), tpool._main_hidden():
        raise OSError("no more processes")
    assert fake_main.__file__ == "/somewhere/script.py"
    assert tpool._main_lock.acquire(blocking=False)
    tpool._main_lock.release()


def test_main_without_file_or_spec_stays_so(fake_main: types.ModuleType) -> None:
    del fake_main.__file__, fake_main.__spec__
    with tpool._main_hidden():
        assert fake_main.__spec__ is None
    assert "__file__" not in vars(fake_main)
    assert "__spec__" not in vars(fake_main)


def test_main_hidden_by_one_thread_at_a_time(fake_main: types.ModuleType) -> None:
    inside, release = threading.Event(), threading.Event()
    seen: list[object] = []

    def first() -> None:
        with tpool._main_hidden():
            inside.set()
            release.wait(10)

    def second() -> None:
        with tpool._main_hidden():
            seen.append(fake_main.__spec__)
        seen.append(fake_main.__file__)

    a = threading.Thread(target=first)
    a.start()
    assert inside.wait(10)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.2)
    assert b.is_alive() and not seen  # waits for the first thread to restore __main__
    release.set()
    a.join(10)
    b.join(10)
    assert seen == [None, "/somewhere/script.py"]
    assert fake_main.__file__ == "/somewhere/script.py"


SCRIPT = """
import json, multiprocessing, os, sys
sys.path[:0] = [{tests!r}, {src!r}]
if __name__ != "__main__":  # imported again, as a spawned child's __mp_main__
    with open({marker!r}, "a") as f:
        f.write(__name__ + "\\n")
    raise RuntimeError("this script must not be imported by a worker")

from pgferry.engine import pool as tpool

def reimports():
    return open({marker!r}).read().count("\\n") if os.path.exists({marker!r}) else 0

pool = tpool.start_pool("ferry_transforms:with_pid", 2, job="skip-main")
try:
    futures = [pool.submit(tpool.run_in_worker, ("id",), [(i,)], None, False) for i in range(6)]
    pids = sorted({{row[1] for f in futures for row in f.result(timeout=120)[1]}})
finally:
    pool.shutdown()
before = reimports()
# The control: a plain spawned process does import this script again.
control = multiprocessing.get_context("spawn").Process(target=os.getpid)
control.start()
control.join(60)
print(json.dumps({{"me": os.getpid(), "pids": pids, "before": before, "after": reimports()}}))
"""


@pytest.mark.slow
def test_workers_do_not_import_the_parents_main_script(tmp_path: Path) -> None:
    marker = tmp_path / "reimported"
    script = tmp_path / "main_script.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), src=str(SRC), marker=str(marker)))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] == 0, "a pool worker imported the parent's __main__"
    assert out["pids"] and out["me"] not in out["pids"], "the batches did not run in workers"
    assert GONE not in proc.stderr
    # The control child re-imported the script: the check above would have seen it.
    assert out["after"] == 1
    assert marker.read_text() == "__mp_main__\n"


# --- Workers that die ------------------------------------------------------------------------


def test_workers_that_exit_leave_every_batch_to_the_parent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batches = [batch(i * 50) for i in range(6)]
    with caplog.at_level(logging.WARNING, "pgferry"):
        pool = tpool.start_pool("ferry_transforms:split_name_outside_workers", 2, job="dies")
        try:
            results = run_batches(pool, batches)
            later = run_batches(pool, [batch(1_000)])  # submitted once the pool is broken
        finally:
            pool.shutdown()
    assert [rows for _, rows, _, _ in results] == [expected(b) for b in batches]
    assert later[0][1] == expected(batch(1_000))
    split_columns = ("id", "first_name", "last_name", "age", "email", "created_at", "score")
    assert {cols for cols, *_ in results} == {(*split_columns, "payload")}
    [warning] = gone_warnings(caplog)
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert message.startswith("job dies: the worker processes of transform ")
    assert "ferry_transforms:split_name_outside_workers" in message
    assert "exited with code 1" in message


@pytest.mark.slow
def test_worker_killed_by_sigkill_mid_run(caplog: pytest.LogCaptureFixture) -> None:
    batches = [batch(i * 100, 100) for i in range(15)]  # id 1000 is in the 11th
    with caplog.at_level(logging.WARNING, "pgferry"):
        pool = tpool.start_pool("ferry_transforms:split_name_killed_at_1000", 2, job="oom")
        try:
            results = run_batches(pool, batches)
        finally:
            pool.shutdown()
    assert [rows for _, rows, _, _ in results] == [expected(b) for b in batches]
    [warning] = gone_warnings(caplog)
    assert "killed by SIGKILL (out of memory?)" in warning.getMessage()


def test_transform_raising_in_a_worker_fails_only_its_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = [[(i, "x") for i in range(first, first + 5)] for first in (0, 5, 10)]
    with caplog.at_level(logging.WARNING, "pgferry"):
        pool = tpool.start_pool("ferry_transforms:fail_on_7", 2, job="raises")
        try:
            futures = [
                pool.submit(tpool.run_in_worker, ("id", "name"), r, ["id"], False) for r in rows
            ]
            with pytest.raises(TransformError, match="seven is not allowed") as info:
                futures[1].result(timeout=120)
            assert "id=7" in str(info.value)
            assert futures[0].result(timeout=120)[1] == rows[0]
            assert futures[2].result(timeout=120)[1] == rows[2]
        finally:
            pool.shutdown()
    assert gone_warnings(caplog) == []


def test_workers_that_cannot_start(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fork(self: object) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(tpool._WorkerProcess, "start", no_fork)
    batches = [batch(0), batch(50)]
    with caplog.at_level(logging.WARNING, "pgferry"):
        pool = tpool.start_pool("ferry_transforms:split_name", 2, job="nofork")
        try:
            results = run_batches(pool, batches)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    assert [rows for _, rows, _, _ in results] == [expected(b) for b in batches]
    [warning] = gone_warnings(caplog)
    assert "BlockingIOError" in warning.getMessage()
    assert "Resource temporarily unavailable" in warning.getMessage()


def test_fallback_transform_raising_fails_its_batch(caplog: pytest.LogCaptureFixture) -> None:
    fallback = tpool._Fallback("ferry_transforms:fail_on_7", "j")
    with caplog.at_level(logging.WARNING, "pgferry"):
        fallback.engage("test")
        fallback.engage("again")  # one warning per pool
    futures: list[Any] = []
    for first in (0, 5):
        futures.append(Future())
        fallback.run(
            futures[-1],
            tpool.run_in_worker,
            (("id",), [(first + i,) for i in range(5)], None, False),
        )
    assert futures[0].result(timeout=30)[1] == [(i,) for i in range(5)]
    with pytest.raises(TransformError, match="seven is not allowed"):
        futures[1].result(timeout=30)
    fallback.shutdown(wait=True, cancel_futures=False)
    late: Any = Future()
    fallback.run(late, tpool.run_in_worker, (("id",), [(1,)], None, False))
    assert late.cancelled()  # after shutdown: nobody waits for it
    assert len(gone_warnings(caplog)) == 1


def test_no_pool_without_shared_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing.context

    def no_semaphores(self: object) -> None:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(multiprocessing.context.SpawnContext, "Lock", no_semaphores)
    reason = tpool.can_start_pool()
    assert reason is not None
    assert "cannot share a lock" in reason and "Function not implemented" in reason


def test_pool_workers_are_spawned_by_the_worker_context() -> None:
    pool = tpool.start_pool("ferry_transforms:identity", 1)
    try:
        assert pool.submit(tpool.run_in_worker, ("id",), [(1,)], None, False).result(120)[1] == [
            (1,)
        ]
        procs = list(pool._processes.values())  # type: ignore[attr-defined]
        assert procs and all(isinstance(p, tpool._WorkerProcess) for p in procs)
        assert all(p.pid != os.getpid() for p in procs)
    finally:
        pool.shutdown()


def test_a_transform_path_into_main_runs_inline() -> None:
    # Workers start without the parent's __main__: such a path could not be imported there.
    assert tpool.pool_unpicklable_reason("__main__:clean") == (
        "the transform is in __main__, which pool workers do not import"
    )
    assert tpool.pool_unpicklable_reason("main:clean") is None
