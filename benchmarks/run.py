"""The throughput benchmark: ``python -m benchmarks.run --rows N [--dsn DSN] [--rounds 3]``.

Builds the standard workload in one database (the embedded PostgreSQL by default), then runs
the methods in alternating rounds, each run in a fresh process against an empty ``bench_dst``,
verifies every run's target against ``bench_expected`` and writes ``results/latest.md`` and
``results/latest.json``. Exits 1 if any run failed or produced a wrong target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks import database, report
from benchmarks.machine import describe_machine, git_revision
from benchmarks.measure import (
    ServerCpu,
    child_environment,
    find_postmaster,
    run_child,
    warm_up,
)
from benchmarks.methods import METHODS, parse_methods
from benchmarks.methods.common import event_loop_name
from benchmarks.workload import (
    REPO_ROOT,
    load_split_name,
    source_select,
    transform_file,
    transform_select,
    workload_statements,
)

__all__ = ["main", "round_orders"]

DATABASE = "pgferry_bench"
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="pgferry throughput benchmark on the standard workload.",
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in bench_src")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (>= 3)")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="which methods, e.g. a,b,f (default: all)"
    )
    parser.add_argument(
        "--dsn",
        help="run in this database instead of an embedded server; bench_src, bench_expected "
        "and bench_dst are dropped and recreated in it",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write latest.*")
    parser.add_argument(
        "--timeout", type=float, help="seconds per run (default: 120 + 300 µs per row)"
    )
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        args.method_keys = parse_methods(args.methods)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def round_orders(keys: Sequence[str], rounds: int) -> list[list[str]]:
    """The order of the methods in each round: as given, then reversed, and so on.

    Alternating the direction puts each method early and late equally often, so that a drift
    of the machine during the benchmark (caches, the server's background work) spreads evenly.
    """
    return [list(keys) if r % 2 == 0 else list(reversed(keys)) for r in range(rounds)]


def check_same_transform(path: str | None) -> None:
    """Methods (f)/(g) use ``pgferry.demo.split_name``; (c)/(d) the shared file: same results?"""
    import datetime

    from pgferry.demo import split_name

    shared = load_split_name(path)
    when = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    for name in ("Mary Ann Smith", "Zoë Müller", "José van der Berg", "Single", " lead"):
        row = {"id": 1, "name": name, "age": 3, "email": None, "created_at": when,
               "score": 0.5, "payload": '{"n": 1}'}  # fmt: skip
        if shared(dict(row)) != split_name(dict(row)):
            raise SystemExit(f"pgferry.demo.split_name differs from {path} on {name!r}")


@contextlib.contextmanager
def benchmark_database(dsn: str | None) -> Iterator[tuple[str, str]]:
    """The DSN to run in and what kind of server it is (``embedded`` or ``external``)."""
    if dsn is not None:
        yield dsn, "external"
        return
    from pgferry.embedded import EmbeddedPostgres

    # Default settings on purpose (not fast=True): the reference figures are on defaults.
    with EmbeddedPostgres() as server:
        yield server.create_database(DATABASE), "embedded"


def log(message: str) -> None:
    """Progress on stderr; stdout gets the final table."""
    print(message, file=sys.stderr, flush=True)


def run_one(
    key: str,
    number: int,
    base: dict[str, Any],
    *,
    timeout: float,
    server: ServerCpu,
    env: dict[str, str],
) -> report.RunRecord:
    """Reset the target, run method ``key`` in a fresh process, verify its target."""
    dsn = base["dsn"]
    asyncio.run(database.reset_target(dsn))
    config = {**base, "method": key}
    child = run_child(config, timeout=timeout, server=server, cwd=str(REPO_ROOT), env=env)
    record = report.RunRecord(
        method=key,
        round=number,
        wall_s=child.wall_s,
        transfer_s=child.report.get("transfer_s"),
        user_s=child.user_s,
        sys_s=child.sys_s,
        server_cpu_s=child.server_cpu_s,
        peak_tree_rss=child.peak_tree_rss,
        maxrss=child.report.get("vmhwm_bytes") or child.report.get("ru_maxrss_bytes"),
        ru_maxrss=child.report.get("ru_maxrss_bytes"),
        detail=child.report.get("detail") or {},
    )
    if not child.ok:
        why = f"timed out after {timeout:g} s" if child.timed_out else f"exit {child.returncode}"
        last = child.stderr.splitlines()[-1] if child.stderr else ""
        record.error = f"{why}: {last}" if last else why
        record.verification = "not checked: the run failed"
        log(f"  ({key}) FAILED ({why})\n{child.stderr}")
        return record
    check = asyncio.run(database.verify(dsn))
    record.verified = check.ok
    record.verification = check.describe()
    log(f"  ({key}) {child.wall_s:7.2f} s  {record.verification}")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 if every run finished and was verified, else 1."""
    args = parse_args(argv)
    if args.rounds < 3:
        log(f"note: {args.rounds} round(s); recorded figures need at least 3")
    statements, workload_origin = workload_statements(args.rows)
    transform_sql = transform_select(statements)
    transform_path = transform_file()
    check_same_transform(transform_path)
    timeout = args.timeout or 120 + args.rows * 300e-6
    command = "python -m benchmarks.run " + shlex.join(sys.argv[1:] if argv is None else argv)
    meta: dict[str, Any] = {
        "command": command.strip(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rows": args.rows,
        "rounds": args.rounds,
        "methods": args.method_keys,
        "workload": _relative(workload_origin),
        "transform": _relative(transform_path or "pgferry.demo:split_name"),
    }
    records: list[report.RunRecord] = []
    pycache = tempfile.mkdtemp(prefix="pgferry-bench-pycache-")
    env = child_environment(pycache)
    modules = sorted({METHODS[k].target.partition(":")[0] for k in args.method_keys})
    with _removing(pycache), benchmark_database(args.dsn) as (dsn, kind):
        warm_up(["benchmarks.child", *modules], env=env, cwd=str(REPO_ROOT))
        log(f"creating the workload ({args.rows:,} rows) on the {kind} server …")
        started = time.perf_counter()
        asyncio.run(database.create_workload(dsn, statements))
        log(f"  done in {time.perf_counter() - started:.1f} s")
        facts = asyncio.run(database.server_facts(dsn, find_postmaster))
        server = ServerCpu(facts["postmaster_pid"])
        base = {
            "dsn": dsn,
            "database": facts["database"],
            "rows": args.rows,
            "transform_sql": transform_sql,
            "source_sql": source_select(),
            "target_columns": asyncio.run(database.target_columns(dsn)),
            "transform_file": transform_path,
        }
        for number, order in enumerate(round_orders(args.method_keys, args.rounds), 1):
            log(f"round {number}/{args.rounds}: {', '.join(order)}")
            for key in order:
                records.append(run_one(key, number, base, timeout=timeout, server=server, env=env))
        if kind == "external":
            asyncio.run(database.drop_all(dsn))
    meta["server"] = {**facts, "kind": kind}
    meta["machine"] = describe_machine(event_loop_name())
    import pgferry

    meta["pgferry"] = pgferry.__version__
    meta["git"] = git_revision(REPO_ROOT)
    labels = {k: METHODS[k].label for k in METHODS if k in args.method_keys}
    summaries = report.summarise(records, labels, args.rows)
    problems = [
        f"({r.method}) round {r.round}: {r.error or r.verification}" for r in records if not r.good
    ]
    markdown = report.render_markdown(meta, summaries, problems)
    data = report.to_json(meta, summaries, records, problems)
    md_path, json_path = report.write_results(args.results, markdown, data)
    print(report.results_table(summaries))
    log(f"wrote {_relative(str(md_path))} and {_relative(str(json_path))}")
    if problems:
        log("FAILED: " + "; ".join(problems))
        return 1
    return 0


@contextlib.contextmanager
def _removing(directory: str) -> Iterator[None]:
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _relative(path: str) -> str:
    """``path`` relative to the repository root where that is shorter (``../shared/…``)."""
    try:
        p = Path(path).resolve()
    except (OSError, ValueError):
        return path
    if not p.is_absolute() or not p.exists():
        return path
    try:
        return str(p.relative_to(REPO_ROOT))
    except ValueError:
        if p.is_relative_to(REPO_ROOT.parent):
            return "../" + str(p.relative_to(REPO_ROOT.parent))
        return path


if __name__ == "__main__":
    sys.exit(main())
