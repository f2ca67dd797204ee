"""Parallel pipelines (``pipelines: N``): same rows, same guarantees, fallbacks where it cannot.

Each pipeline is a complete reader → transform → loader over a key range of one exported
snapshot, committing with its own ledger row; see ``pgferry.engine.parallel``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import pgferry
from helpers import Databases, differences, execute, fetch, fetchval, job_with, load_workload
from killing import Killer, KillPoint
from pgferry.engine import parallel

ROWS = 12_000
TRANSFORMS = """
import time

from ferry_transforms import split_name


def fail_on_11000(row):
    if row["id"] == 11000:
        raise ValueError("eleven thousand is not allowed")
    return split_name(row)


def slow_split(row):
    time.sleep(0.0005)
    return split_name(row)
"""


@pytest.fixture(autouse=True)
def par_transforms(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``par_transforms``: importable here and, through ``sys.path``, in every pipeline."""
    directory = tmp_path_factory.mktemp("par_transforms")
    (directory / "par_transforms.py").write_text(TRANSFORMS)
    monkeypatch.syspath_prepend(str(directory))


def job(dbs: Databases, **kw: Any) -> pgferry.Job:
    defaults: dict[str, Any] = {
        "name": "par",
        "source": {"dsn": dbs.source, "table": "bench_src", "key": "id"},
        # Source and target in one database, so that EXCEPT can compare them in SQL.
        "target": {"dsn": dbs.source, "table": "people"},
        "transform": "ferry_transforms:split_name",
        "batch_size": 1_000,
        "pipelines": 2,
    }
    built: pgferry.Job = job_with(defaults, **kw)
    return built


def ledger(dsn: str, name: str = "par") -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in fetch(
            dsn,
            "SELECT partition, progress FROM pgferry.ledger WHERE job = $1 ORDER BY partition",
            name,
        )
    ]


def pgferry_backends(dsn: str) -> int:
    return fetchval(
        dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgferry:%'"
    )


def live_children() -> list[psutil.Process]:
    """Pipeline worker processes of this process that are still alive."""
    alive = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and any(
                "pgferry.engine.worker" in part for part in proc.cmdline()
            ):
                alive.append(proc)
        except psutil.NoSuchProcess:
            pass
    return alive


# --- The plan of ranges (no database) -------------------------------------------------------------


def test_ranges_are_recorded_and_read_back() -> None:
    ranges = parallel.Ranges("ab12cd34", "id", [101, 201])
    assert ranges.count == 3
    marker = ranges.marker()
    assert marker == [parallel.MARKER, "ab12cd34", "id", "101", "201"]
    back = parallel.parse_marker(marker)
    assert back == parallel.Ranges("ab12cd34", "id", [101, 201], resumed=True)
    assert parallel.parse_marker(None) is None
    assert parallel.parse_marker(["42"]) is None  # a plain progress position
    parts = ranges.partitions("p")
    assert [(x.name, x.column, x.lower, x.upper) for x in parts] == [
        ("p#pipelines-ab12cd34-0", "id", None, 101),
        ("p#pipelines-ab12cd34-1", "id", 101, 201),
        ("p#pipelines-ab12cd34-2", "id", 201, None),
    ]


@pytest.mark.parametrize(
    ("batch_size", "queue_depth", "n", "share"),
    [(10_000, 4, 2, (5_000, 2)), (10_000, 4, 8, (1_250, 1)), (2_000, 1, 4, (1_000, 1)),
     (500, 4, 2, (500, 2))],
)  # fmt: skip
def test_pipelines_share_the_memory_budget(
    batch_size: int, queue_depth: int, n: int, share: tuple[int, int]
) -> None:
    j = pgferry.Job(
        source={"table": "a"}, target={"table": "b"}, batch_size=batch_size,
        queue_depth=queue_depth,
    )  # fmt: skip
    got = parallel._share(j, n)
    assert (got["batch_size"], got["queue_depth"]) == share


# --- Same result as one pipeline, in every mode ------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "transform"),
    [
        ("append", "ferry_transforms:split_name"),
        ("append", "ferry_transforms:split_name_batch"),
        ("upsert", "ferry_transforms:split_name"),
        ("replace", "ferry_transforms:split_name"),
    ],
)
def test_parallel_pipelines_match_sql(dbs: Databases, mode: str, transform: str) -> None:
    load_workload(dbs.source, ROWS)
    if mode == "replace":
        execute(dbs.source, "CREATE TABLE people AS SELECT * FROM bench_expected WHERE id < 10")
        execute(dbs.source, "UPDATE people SET first_name = 'old'")
    result = pgferry.run(
        job(dbs, transform=transform, target={"mode": mode, "key": "id"}, pipelines=3)
    )
    assert result.status == "success"
    assert result.path == "rows"
    assert result.workers == 3  # three pipelines, each transforming inline
    assert (result.rows_read, result.rows_written) == (ROWS, ROWS)
    assert result.batches >= ROWS // 1_000
    assert differences(dbs.source) == 0
    # The ranges' ledger rows are gone and no plan is left behind.
    assert ledger(dbs.source) == [("", None)]
    assert fetchval(dbs.source, "SELECT rows_written FROM pgferry.ledger") == ROWS
    assert fetchval(dbs.source, "SELECT count(*) FROM pg_class WHERE relname LIKE '_pgferry%'") == 0
    for stage in ("extract", "transform", "load"):
        assert result.stages[stage].busy_s > 0


def test_upsert_rerun_rewrites_nothing(dbs: Databases) -> None:
    load_workload(dbs.source, ROWS)
    j = job(dbs, target={"mode": "upsert", "key": "id"})
    assert pgferry.run(j).rows_written == ROWS
    execute(dbs.source, "UPDATE bench_src SET age = age + 1 WHERE id % 1000 = 0")
    again = pgferry.run(j)
    assert again.workers == 2
    assert (again.rows_read, again.rows_written) == (ROWS, ROWS // 1_000)
    assert differences(dbs.source) == 0


def test_progress_reports_every_committed_batch(dbs: Databases) -> None:
    load_workload(dbs.source, ROWS)
    seen: list[pgferry.Progress] = []
    pgferry.run(job(dbs), on_progress=seen.append)
    written = [p.rows_written for p in seen]
    assert written == sorted(written)
    assert written[-1] == ROWS
    assert len(seen) >= ROWS // 1_000


def test_source_query_and_pipeline_logs(dbs: Databases, caplog: pytest.LogCaptureFixture) -> None:
    load_workload(dbs.source, ROWS)
    caplog.set_level(logging.INFO, logger="pgferry")
    j = job(dbs, source={"table": None, "query": "SELECT * FROM bench_src WHERE id > $1",
                         "params": ["100"]})  # fmt: skip
    result = pgferry.run(j)
    assert result.rows_written == ROWS - 100
    assert fetchval(dbs.source, "SELECT min(id) FROM people") == 101
    assert any("2 pipelines over ranges of id" in r.getMessage() for r in caplog.records)


def test_target_created_from_the_first_batch_with_declared_columns(dbs: Databases) -> None:
    load_workload(dbs.source, ROWS)
    result = pgferry.run(job(dbs, transform="ferry_transforms:drop_odd"))
    assert result.rows_written == ROWS // 2
    assert fetchval(dbs.source, "SELECT count(*) FROM people WHERE id % 2 = 1") == 0
    assert fetchval(dbs.source, "SELECT count(DISTINCT id) FROM people") == ROWS // 2


# --- When it runs one pipeline instead -----------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"incremental": {"column": "created_at"}}, "incremental load commits one watermark"),
        # (bench_src's primary key is the default key: only a query source has none.)
        (
            {"source": {"key": None, "table": None, "query": "SELECT * FROM bench_src"}},
            "without a key the run is one transaction",
        ),
        ({"source": {"key": "name"}}, "is not an integer column"),
        ({"max_rejects": 5}, "max_rejects is one budget"),
        ({"transform": "lambda"}, "not importable by module path"),
        ({"target": {"mode": "upsert", "key": "email"}}, "upsert key differs"),
    ],
)
def test_falls_back_to_one_pipeline(
    dbs: Databases, caplog: pytest.LogCaptureFixture, changes: dict[str, Any], why: str
) -> None:
    load_workload(dbs.source, 3_000)
    if changes.get("transform") == "lambda":
        from ferry_transforms import split_name

        changes = {"transform": lambda row: split_name(row)}
    if changes.get("target", {}).get("key") == "email":
        execute(dbs.source, "DELETE FROM bench_src WHERE email IS NULL")
    caplog.set_level(logging.WARNING, logger="pgferry")
    # workers: 0, not auto: with auto, the one pipeline measures whether a pool pays, and on a
    # loaded machine it sometimes starts one. Two pipelines would still report workers == 2.
    result = pgferry.run(job(dbs, workers=0, **changes))
    assert result.workers == 0
    assert any("one pipeline, not 2" in r.getMessage() and why in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]  # fmt: skip
    assert differences(dbs.source) == 0


def test_auto_stays_in_one_pipeline_for_small_tables(
    dbs: Databases, caplog: pytest.LogCaptureFixture
) -> None:
    load_workload(dbs.source, 3_000)
    caplog.set_level(logging.INFO, logger="pgferry")
    result = pgferry.run(job(dbs, pipelines="auto"))
    assert result.workers == 0
    assert any("one pipeline (" in r.getMessage() for r in caplog.records)
    assert differences(dbs.source) == 0


def test_auto_measures_and_starts_pipelines(
    dbs: Databases, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the table were large: the decision then rests on the measured first batch.
    monkeypatch.setattr(parallel, "_AUTO_MIN_ROWS", 1_000)
    monkeypatch.setattr(parallel, "_AUTO_MIN_SECONDS", 0.0)
    monkeypatch.setattr(parallel, "cores", lambda: 2)
    load_workload(dbs.source, ROWS)
    execute(dbs.source, "ANALYZE bench_src")
    caplog.set_level(logging.INFO, logger="pgferry")
    result = pgferry.run(job(dbs, pipelines="auto"))
    assert result.workers == 2
    assert any("µs/row incl. decoding, 2 cores" in r.getMessage() for r in caplog.records)
    assert differences(dbs.source) == 0


def test_auto_keeps_an_explicit_workers_setting(dbs: Databases) -> None:
    load_workload(dbs.source, 2_000)
    result = pgferry.run(job(dbs, pipelines="auto", workers=0))
    assert result.workers == 0
    assert differences(dbs.source) == 0


def test_pipelines_and_a_pool_do_not_combine() -> None:
    with pytest.raises(pgferry.ConfigError, match="pipelines > 1 runs the transform inline"):
        pgferry.Job(source={"table": "a"}, target={"table": "b"}, pipelines=2, workers=2)
    with pytest.raises(pgferry.ConfigError, match="pipelines must be"):
        pgferry.Job(source={"table": "a"}, target={"table": "b"}, pipelines=0)


# --- Failures, retries, cancellation --------------------------------------------------------------


def test_a_failing_pipeline_fails_the_run_and_keeps_committed_batches(dbs: Databases) -> None:
    load_workload(dbs.source, ROWS)
    with pytest.raises(pgferry.TransformError) as info:
        pgferry.run(job(dbs, transform="par_transforms:fail_on_11000", max_retries=0))
    assert "eleven thousand is not allowed" in str(info.value)
    assert "id=11000" in str(info.value)
    assert not info.value.__class__.__name__.startswith("Transient")
    assert live_children() == []
    # Whole batches only; the next run (fixed transform) continues each range.
    written = fetchval(dbs.source, "SELECT count(*) FROM people")
    assert written % 1_000 == 0 or written == ROWS
    result = pgferry.run(job(dbs))
    assert result.workers == 2
    assert differences(dbs.source) == 0
    assert ledger(dbs.source) == [("", None)]


@pytest.mark.slow
def test_terminated_backend_is_retried_without_duplicates(
    dbs: Databases, pg_server_dsn: str
) -> None:
    load_workload(dbs.source, ROWS)
    database = dbs.source.rsplit("/", 1)[1]
    stop = threading.Event()
    killed: list[int] = []

    def killer() -> None:
        # A pipeline's reader: idle in its snapshot transaction between two fetches.
        while not stop.is_set():
            if (
                fetchval(dbs.source, "SELECT to_regclass('people') IS NOT NULL")
                and fetchval(dbs.source, "SELECT count(*) FROM people") >= 1_000
            ):
                pids = fetch(
                    pg_server_dsn,
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name "
                    "LIKE 'pgferry:%' AND state = 'idle in transaction'",
                    database,
                )
                if pids:
                    fetchval(pg_server_dsn, "SELECT pg_terminate_backend($1)", pids[0][0])
                    killed.append(pids[0][0])
                    return
            time.sleep(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        result = pgferry.run(job(dbs, transform="par_transforms:slow_split", retry_backoff=0.1))
    finally:
        stop.set()
        thread.join()
    assert killed, "the test did not manage to terminate a backend mid-run"
    assert result.attempts >= 2
    assert differences(dbs.source) == 0
    assert ledger(dbs.source) == [("", None)]


@pytest.mark.slow
def test_a_killed_worker_fails_the_run_and_the_next_run_finishes(dbs: Databases) -> None:
    load_workload(dbs.source, ROWS)
    killed: list[int] = []

    def kill_a_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            workers = live_children()
            if (
                workers
                and fetchval(dbs.source, "SELECT to_regclass('people') IS NOT NULL")
                and fetchval(dbs.source, "SELECT count(*) FROM people") >= 1_000
            ):
                workers[0].kill()
                killed.append(workers[0].pid)
            time.sleep(0.02)

    thread = threading.Thread(target=kill_a_worker)
    thread.start()
    try:
        with pytest.raises(pgferry.PgferryError, match="was killed by signal 9"):
            pgferry.run(job(dbs, transform="par_transforms:slow_split"))
    finally:
        thread.join()
    assert killed
    assert live_children() == []
    result = pgferry.run(job(dbs))
    assert result.workers == 2
    assert differences(dbs.source) == 0
    assert ledger(dbs.source) == [("", None)]


async def test_cancellation_stops_every_pipeline_and_commits_whole_batches(
    dbs: Databases,
) -> None:
    await asyncio.to_thread(load_workload, dbs.source, 20_000)
    j = job(dbs, transform="ferry_transforms:slow_identity", batch_size=200,
            target={"dsn": dbs.target})  # fmt: skip
    committed = asyncio.Event()

    def on_progress(p: pgferry.Progress) -> None:
        if p.rows_written >= 1_000:
            committed.set()

    task = asyncio.create_task(pgferry.run_async(j, on_progress=on_progress))
    await asyncio.wait_for(committed.wait(), 120)
    assert live_children(), "no worker process is running"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert live_children() == []
    for _ in range(50):
        if await asyncio.to_thread(pgferry_backends, dbs.target) == 0:
            break
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(pgferry_backends, dbs.target) == 0
    assert await asyncio.to_thread(pgferry_backends, dbs.source) == 0
    written = await asyncio.to_thread(fetchval, dbs.target, "SELECT count(*) FROM people")
    assert 0 < written < 20_000
    assert written % 200 == 0, "a batch was half-committed"


# --- Kill the process at any point, run again --------------------------------------------------

# 0.5 ms a row: 8,000 rows take two pipelines about 2 s, 32 batches of 250.
SLOW = "import time\n\ndef slow(row):\n    time.sleep(0.0005)\n    return row\n"
KILL_ROWS = 8_000
KILL_BATCHES = KILL_ROWS // 250
SHADOW = "_pgferry_new_dst"  # where a replace loads


def killer(tmp_path: Path, dbs: Databases, target: str, transform: str = "slow:slow") -> Killer:
    (tmp_path / "slow.py").write_text(SLOW)
    path = tmp_path / "job.yaml"
    path.write_text(
        f"name: par\nsource: {{dsn: '{dbs.source}', table: src, key: id}}\n"
        f"target: {{dsn: '{dbs.target}', table: dst{target}}}\n"
        f"transform: {transform}\nbatch_size: 250\npipelines: 2\nlock_wait: 30\n"
    )
    return Killer(path, dbs.target, "par")


def kill_point(rnd: random.Random, dbs: Databases, table: str = "dst") -> KillPoint:
    """At start, or after a random number of the batches left (the pipelines' together), two
    short of the end so that the kill lands before the run ends.

    A run continues each range after its progress, so the batches left are those whose rows
    are not in ``table`` (where the run loads) yet.
    """
    done = 0
    if fetchval(dbs.target, "SELECT to_regclass($1) IS NOT NULL", table):
        done = fetchval(dbs.target, f'SELECT count(*) FROM "{table}"')
    left = KILL_BATCHES - done // 250
    if left < 3 or rnd.random() < 0.2:
        return KillPoint.started()
    return KillPoint.after_batches(rnd.randint(1, left - 2))


def src_rows(dsn: str, where: str = "true") -> list[tuple[Any, ...]]:
    return [tuple(r) for r in fetch(dsn, f"SELECT * FROM src WHERE {where} ORDER BY id")]


def dst_rows(dsn: str) -> list[tuple[Any, ...]]:
    if not fetchval(dsn, "SELECT to_regclass('dst') IS NOT NULL"):
        return []
    return [tuple(r) for r in fetch(dsn, "SELECT * FROM dst ORDER BY id")]


def setup_kill_source(dsn: str) -> None:
    execute(
        dsn,
        "CREATE TABLE src (id bigint PRIMARY KEY, name text, amount numeric(12,2));"
        f"INSERT INTO src SELECT g, 'n' || g, g * 0.5 FROM generate_series(1, {KILL_ROWS}) g",
    )


def assert_prefix_per_range(dbs: Databases, attempt: int) -> None:
    """Every range holds exactly its source rows up to its committed progress."""
    got = dst_rows(dbs.target)
    assert len({r[0] for r in got}) == len(got), f"duplicates after kill {attempt}"
    plan = None
    if fetchval(dbs.target, "SELECT to_regclass('pgferry.ledger') IS NOT NULL"):
        plan = fetchval(dbs.target, "SELECT progress FROM pgferry.ledger WHERE partition = ''")
    ranges = parallel.parse_marker(plan)
    if ranges is None:  # no plan recorded yet, or the run had finished
        assert got in ([], src_rows(dbs.source)), f"after kill {attempt}"
        return
    expected: list[tuple[Any, ...]] = []
    for part in ranges.partitions(""):
        progress = fetchval(
            dbs.target, "SELECT progress FROM pgferry.ledger WHERE partition = $1", part.name
        )
        if progress is None:
            continue
        low = f"id >= {part.lower}" if part.lower is not None else "true"
        expected += src_rows(dbs.source, f"{low} AND id <= {int(progress[0])}")
    assert got == sorted(expected), f"after kill {attempt}"


def plan_left(dbs: Databases) -> bool:
    """Whether the job's ledger row records the ranges of an unfinished parallel run."""
    if not fetchval(dbs.target, "SELECT to_regclass('pgferry.ledger') IS NOT NULL"):
        return False
    progress = fetchval(dbs.target, "SELECT progress FROM pgferry.ledger WHERE partition = ''")
    return parallel.parse_marker(progress) is not None


def wait_for_no_backends(dsn: str) -> None:
    for _ in range(100):
        if pgferry_backends(dsn) == 0:
            return
        time.sleep(0.05)
    raise AssertionError("pipelines outlived their killed coordinator")


@pytest.mark.slow
def test_append_survives_kills(dbs: Databases, tmp_path: Path) -> None:
    setup_kill_source(dbs.source)
    runs = killer(tmp_path, dbs, "")
    rnd = random.Random(20261121)
    for attempt in range(8):
        assert runs.kill(kill_point(rnd, dbs)), f"kill {attempt} did not land"
        # Killing the coordinator kills its pipelines: nothing commits after this point.
        wait_for_no_backends(dbs.target)
        assert_prefix_per_range(dbs, attempt)
    assert len(runs.landed) == 8
    runs.finish()
    assert dst_rows(dbs.target) == src_rows(dbs.source)
    assert [tuple(r) for r in fetch(dbs.target, "SELECT partition, progress FROM "
                                    "pgferry.ledger")] == [("", None)]  # fmt: skip


@pytest.mark.slow
def test_upsert_and_replace_survive_kills(dbs: Databases, tmp_path: Path) -> None:
    setup_kill_source(dbs.source)
    rnd = random.Random(5)
    for target, loads in ((", mode: upsert, key: id", "dst"), (", mode: replace", SHADOW)):
        runs = killer(tmp_path, dbs, target)
        for attempt in range(3):
            assert runs.kill(kill_point(rnd, dbs, loads)), f"kill {attempt} did not land"
            wait_for_no_backends(dbs.target)
            got = dst_rows(dbs.target)
            assert len({r[0] for r in got}) == len(got), f"duplicates after kill {attempt}"
            assert set(got) <= set(src_rows(dbs.source))
        assert len(runs.landed) == 3
        runs.finish()
        assert dst_rows(dbs.target) == src_rows(dbs.source)
        assert fetchval(dbs.target, "SELECT count(*) FROM pgferry.ledger") == 1
        assert (
            fetchval(dbs.target, "SELECT count(*) FROM pg_class WHERE relname LIKE '_pgferry%'")
            == 0
        )


@pytest.mark.slow
def test_a_stopped_parallel_run_is_finished_by_a_single_pipeline(
    dbs: Databases, tmp_path: Path
) -> None:
    setup_kill_source(dbs.source)
    runs = killer(tmp_path, dbs, "")
    assert runs.kill(KillPoint.after_batches(KILL_BATCHES // 3))
    wait_for_no_backends(dbs.target)
    assert plan_left(dbs), "the kill landed mid-run: the ranges are recorded"
    assert 0 < len(dst_rows(dbs.target)) < KILL_ROWS
    # The same job with one pipeline (and a transform a worker could not even import) still
    # continues each range after its own progress.
    j = pgferry.load_job(runs.job, {"pipelines": 1})
    result = pgferry.run(j.with_overrides(transform=lambda row: dict(row)))
    assert result.workers == 0
    assert dst_rows(dbs.target) == src_rows(dbs.source)
    assert [tuple(r) for r in fetch(dbs.target, "SELECT partition, progress FROM "
                                    "pgferry.ledger")] == [("", None)]  # fmt: skip


@pytest.mark.slow
def test_ctrl_c_stops_every_pipeline(dbs: Databases, tmp_path: Path) -> None:
    setup_kill_source(dbs.source)
    runs = killer(tmp_path, dbs, "")
    # Interrupted once the pipelines have committed some batches, long before the end.
    outcome = runs.run(KillPoint.after_batches(4), sig=signal.SIGINT)
    assert outcome.landed
    assert outcome.returncode == 130, outcome
    assert "Traceback" not in outcome.stderr
    wait_for_no_backends(dbs.target)
    assert_prefix_per_range(dbs, 0)
    written = fetchval(dbs.target, "SELECT count(*) FROM dst")
    assert 0 < written < KILL_ROWS
    assert written % 250 == 0
