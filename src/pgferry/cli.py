"""The ``pgferry`` command line: ``run`` and ``demo``.

Exit codes: 0 success; 1 the run failed (a missing table, an unimportable transform, an
unreachable host…); 2 the job could not be built (invalid file, key, value or option);
130 interrupted.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

import pgferry
from pgferry.engine import Progress as RunProgress
from pgferry.errors import ConfigError, PgferryError
from pgferry.jobfile import apply_overrides, load_job, parse_overrides
from pgferry.partitions import plan_partitions_with_key
from pgferry.result import RunResult
from pgferry.spec import Job

if TYPE_CHECKING:  # rich loads on first output (see _console)
    from rich.console import Console
    from rich.progress import TaskID
    from rich.table import Table

__all__ = ["main"]


@functools.cache
def _console(stderr: bool) -> Console:
    """rich's console, imported on first output: ``--json`` and ``--quiet`` runs never pay
    for rich (29 to 86 ms of imports on this machine, by `python -X importtime`)."""
    from rich.console import Console

    return Console(stderr=stderr)


def _err() -> Console:
    return _console(True)


def _out() -> Console:
    return _console(False)


@contextmanager
def progress_reporter(enabled: bool, label: str) -> Iterator[Callable[[RunProgress], None] | None]:
    """A rich progress bar on stderr, fed by the engine's progress callback."""
    if not enabled:
        yield None
        return
    from pgferry._progress_bar import progress_bars

    rows, pipe = progress_bars(_err())
    task: dict[str, TaskID] = {}

    def update(p: RunProgress) -> None:
        bar = pipe if p.path == "pipe" else rows
        if not task:
            bar.start()
            task["id"] = bar.add_task(label, total=p.total_rows)
        if p.path == "pipe":
            bar.update(task["id"], completed=p.bytes_moved)
        else:
            total = p.total_rows
            if total is not None and p.rows_written > total:
                total = None
            bar.update(task["id"], completed=p.rows_written, total=total)

    try:
        yield update
    finally:
        rows.stop()
        pipe.stop()


def summary_table(result: RunResult) -> Table:
    """The RunResult as a two-column table."""
    from rich.table import Table

    table = Table(title=f"pgferry run {result.run_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("job", result.job),
        ("status", result.status),
        ("mode / path", f"{result.mode} / {result.path}"),
        ("workers", str(result.workers)),
        ("rows read", f"{result.rows_read:,}"),
        ("rows written", f"{result.rows_written:,}"),
        ("rows rejected", f"{result.rows_rejected:,}"),
        ("batches", f"{result.batches:,}"),
        ("bytes written", f"{result.bytes_written:,}"),
        ("duration", f"{result.duration_s:.2f} s"),
        ("throughput", f"{result.rows_per_second:,.0f} rows/s"),
    ]
    if result.committed_by:
        rows.insert(2, ("already committed by", result.committed_by))
    for name, stage in result.stages.items():
        rows.append((f"{name} busy / waiting", f"{stage.busy_s:.2f} s / {stage.wait_s:.2f} s"))
    for change in result.schema_changes:
        before, after = change["from"] or "", change["to"] or ""
        arrow = f"{before} -> {after}" if before and after else before or after
        rows.append((f"schema: {change['change']}", f"{change['column']} {arrow}"))
    for field, value in rows:
        table.add_row(field, value)
    return table


def _fail(message: str, code: int, *, as_json: bool, result: RunResult | None = None) -> NoReturn:
    _err().print("[bold red]error:[/]", end=" ")
    _err().print(message, highlight=False, markup=False, soft_wrap=True)
    if as_json:
        payload = result.to_dict() if result else {"status": "failed", "error": message}
        click.echo(json.dumps(payload))
    sys.exit(code)


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(pgferry.__version__, prog_name="pgferry")
def main() -> None:
    """pgferry moves tables between PostgreSQL databases, fast and safely."""


@main.command()
@click.argument("job_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a job key, e.g. --set target.table=x (repeatable).",
)
@click.option("--source-dsn", help="Source connection string.")
@click.option("--source-table", help="Source table (schema.table).")
@click.option("--source-query", help="Source query (instead of --source-table).")
@click.option("--target-dsn", help="Target connection string.")
@click.option("--target-table", help="Target table (schema.table).")
@click.option("--transform", help="Transform as package.module:function.")
@click.option("--mode", type=click.Choice(["append", "upsert", "replace"]), help="Target mode.")
@click.option("--incremental-column", help="Read only rows after this column's watermark.")
@click.option("--max-rejects", type=float, help="Rows that may be set aside as rejects.")
@click.option("--key", help="Key column(s), comma-separated.")
@click.option("--batch-size", type=int, help="Rows per batch.")
@click.option("--workers", help="0 (inline), N processes, or auto.")
@click.option("--name", help="Job name.")
@click.option(
    "--run-key",
    help="This run's identity in a scheduler (e.g. the date); a full append that already "
    "committed under the same key is skipped instead of appending its rows again.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the RunResult as one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@click.option("--debug", is_flag=True, help="Debug logging and tracebacks.")
def run(
    job_file: Path | None,
    sets: tuple[str, ...],
    as_json: bool,
    quiet: bool,
    debug: bool,
    **inline: Any,
) -> None:
    """Run a job from JOB_FILE (YAML or TOML), or from the options given inline."""
    _configure_logging(debug)
    try:
        job = _build_job(job_file, sets, inline)
    except ConfigError as exc:
        _fail(str(exc), 2, as_json=as_json)
    show = not quiet and not as_json
    try:
        with progress_reporter(show and _err().is_terminal, job.name) as callback:
            result = pgferry.run(job, on_progress=callback)
    except KeyboardInterrupt:
        _fail(
            "interrupted; every committed batch is kept, nothing is half-written",
            130,
            as_json=as_json,
        )
    except PgferryError as exc:
        if debug:
            traceback.print_exc()
        # Exit 2 is for a job that could not be built at all; once the run has started, any
        # failure (a missing table, a bad transform path, an unreachable host) is exit 1.
        _fail(str(exc), 1, as_json=as_json, result=exc.result)
    if as_json:
        click.echo(result.to_json())
    elif not quiet:
        _out().print(summary_table(result))


def _build_job(job_file: Path | None, sets: tuple[str, ...], inline: dict[str, Any]) -> Job:
    overrides = parse_overrides(sets)
    mapping = {
        "source_dsn": "source.dsn",
        "source_table": "source.table",
        "source_query": "source.query",
        "target_dsn": "target.dsn",
        "target_table": "target.table",
        "transform": "transform",
        "mode": "target.mode",
        "key": "target.key",
        "batch_size": "batch_size",
        "workers": "workers",
        "incremental_column": "incremental.column",
        "max_rejects": "max_rejects",
        "name": "name",
        "run_key": "run_key",
    }
    for option, dotted in mapping.items():
        value = inline.get(option)
        if value is None:
            continue
        if option == "key":
            value = [k.strip() for k in value.split(",") if k.strip()]
        elif option == "workers" and value != "auto":
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(f"--workers {value!r}: expected auto or a number") from None
        overrides[dotted] = value
    if job_file is not None:
        return load_job(job_file, overrides)
    if not any(k.startswith(("source.", "target.")) for k in overrides):
        raise ConfigError("give a JOB_FILE, or --source-dsn/--source-table and --target-… options")
    data = apply_overrides({}, overrides)
    if "key" in data.get("target", {}):
        data.setdefault("source", {}).setdefault("key", data["target"]["key"])
    return Job.from_dict(data, "job options")


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-n", "count", type=click.IntRange(1), required=True, help="Number of ranges.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a job key.")
@click.option("--json", "as_json", is_flag=True, help="Print the partitions as JSON.")
def plan(job_file: Path, count: int, sets: tuple[str, ...], as_json: bool) -> None:
    """Split the source of JOB_FILE into N key ranges (partitions)."""
    _configure_logging(False)
    try:
        job = load_job(job_file, parse_overrides(sets))
        parts, choice = asyncio.run(plan_partitions_with_key(job, count))
    except ConfigError as exc:
        _fail(str(exc), 2, as_json=as_json)
    except PgferryError as exc:
        _fail(str(exc), 1, as_json=as_json)
    # Which key and why: on stderr, so that --json output stays a list of partitions.
    _err().print(f"key: {', '.join(choice.columns or ())}: {choice.why}", markup=False)
    if as_json:
        click.echo(json.dumps([p.model_dump(mode="json") for p in parts]))
        return
    from rich.table import Table

    table = Table(title=f"{len(parts)} partitions of {job.name}")
    for name in ("name", "column", "lower", "upper"):
        table.add_column(name)
    for p in parts:
        table.add_row(p.name, p.column, _show(p.lower), _show(p.upper))
    _out().print(table)


def _show(value: Any) -> str:
    return "(open)" if value is None else str(value)


def _state_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--target-dsn",
        "--state-dsn",
        "target_dsn",
        envvar=["PGFERRY_TARGET_DSN", "PGFERRY_STATE_DSN"],
        required=True,
        help="The database holding the state: the target database, or an HTTP job's "
        "state.dsn (or $PGFERRY_TARGET_DSN, $PGFERRY_STATE_DSN).",
    )(fn)
    fn = click.option(
        "--state-schema",
        default="pgferry",
        show_default=True,
        help="Schema of the ledger and runs tables.",
    )(fn)
    return fn


@main.command()
@_state_options
@click.option("--job", "job_name", help="Only this job.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def status(
    target_dsn: str, state_schema: str, job_name: str | None, limit: int, as_json: bool
) -> None:
    """Show recent runs recorded in the target database."""
    _configure_logging(False)
    try:
        runs = asyncio.run(_recent_runs(target_dsn, state_schema, job_name, limit))
    except PgferryError as exc:
        _fail(str(exc), 1, as_json=as_json)
    if as_json:
        click.echo(json.dumps(runs, default=str))
        return
    from rich.table import Table

    table = Table(title="pgferry runs, newest first")
    # The schema changes column only when a run shown made some: it is rare, and the table
    # must stay readable in 80 columns.
    changed = any(run["schema_changes"] for run in runs)
    names = ["started", "job", "partition", "status", "read", "written", "rejected"]
    names += ["watermark after", *(["schema changes"] if changed else []), "error"]
    for name in names:
        table.add_column(name)
    for run in runs:
        changes = "; ".join(f"{c['change']} {c['column']}" for c in run["schema_changes"])
        table.add_row(
            str(run["started_at"])[:19],
            run["job"],
            run["partition"],
            run["status"],
            f"{run['rows_read']:,}",
            f"{run['rows_written']:,}",
            f"{run['rows_rejected']:,}",
            str(run["watermark_after"] or ""),
            *([changes[:60]] if changed else []),
            (run["error"] or "")[:80],
        )
    _out().print(table)


async def _recent_runs(dsn: str, schema: str, job: str | None, limit: int) -> list[dict[str, Any]]:
    from pgferry.connection import close_quietly, connect
    from pgferry.state import StateStore

    conn = await connect(dsn, role="target", job=job or "status", timeout=10)
    try:
        return await StateStore(schema).recent_runs(conn, job, limit)
    finally:
        await close_quietly(conn)


@main.command()
@_state_options
@click.option("--job", "job_name", required=True, help="The job whose ledger to clear.")
@click.option("--partition", default=None, help="Only this partition (default: all).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(
    target_dsn: str, state_schema: str, job_name: str, partition: str | None, yes: bool
) -> None:
    """Forget a job's watermark and progress: its next run starts from the beginning."""
    _configure_logging(False)
    what = f"job {job_name!r}" + (f" partition {partition!r}" if partition is not None else "")
    if not yes and not click.confirm(
        f"Clear the ledger of {what}? Its next run reads the source from the start", err=True
    ):
        _fail("not confirmed; nothing changed", 1, as_json=False)
    try:
        removed = asyncio.run(_reset(target_dsn, state_schema, job_name, partition))
    except PgferryError as exc:
        _fail(str(exc), 1, as_json=False)
    _err().print(f"cleared {removed} ledger entr{'y' if removed == 1 else 'ies'} of {what}")


async def _reset(dsn: str, schema: str, job: str, partition: str | None) -> int:
    from pgferry.connection import close_quietly, connect
    from pgferry.locks import take_run_lock
    from pgferry.state import StateStore

    conn = await connect(dsn, role="target", job=job, timeout=10)
    try:
        store = StateStore(schema)
        await store.ensure(conn)
        # Wait for a run in progress rather than pulling its ledger away under it.
        await take_run_lock(conn, job, partition or "", 60)
        return await store.reset(conn, job, partition)
    finally:
        await close_quietly(conn)


@main.command()
@click.option(
    "--rows",
    default=1_000_000,
    show_default=True,
    type=click.IntRange(0),
    help="Rows in the demo source table.",
)
@click.option("--workers", default="auto", show_default=True, help="0, N or auto.")
@click.option("--batch-size", type=int, default=None, help="Rows per batch.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the RunResult as one JSON object.")
def demo(rows: int, workers: str, batch_size: int | None, quiet: bool, as_json: bool) -> None:
    """Start an embedded PostgreSQL, create the standard workload and move it with pgferry."""
    _configure_logging(False)
    from pgferry.demo import load_workload
    from pgferry.embedded import EmbeddedPostgres

    status = _err().status
    with EmbeddedPostgres() as server:
        with status("creating databases and the standard workload …"):
            source = server.create_database("pgferry_demo_source")
            target = server.create_database("pgferry_demo_target")
            asyncio.run(load_workload(source, rows))
        _err().print(f"source: bench_src with {rows:,} rows on an embedded {server.dsn}")
        spec: dict[str, Any] = {
            "name": "demo",
            "source": {"dsn": source, "table": "bench_src", "key": "id"},
            "target": {"dsn": target, "table": "people", "mode": "replace"},
            "transform": "pgferry.demo:split_name",
            "workers": workers if workers == "auto" else int(workers),
        }
        if batch_size:
            spec["batch_size"] = batch_size
        job = Job.from_dict(spec, "demo job")
        try:
            with progress_reporter(not quiet and not as_json, "demo") as callback:
                result = pgferry.run(job, on_progress=callback)
        except PgferryError as exc:
            _fail(str(exc), 1, as_json=as_json, result=exc.result)
        mismatches = asyncio.run(_compare_with_expected(source, target))
        if as_json:
            click.echo(result.to_json())
        else:
            _out().print(summary_table(result))
            verdict = "[green]identical" if mismatches == 0 else "[red]DIFFERENT"
            _out().print(f"target people vs bench_expected (count + row checksum): {verdict}")
    if mismatches:
        sys.exit(1)


async def _compare_with_expected(source: str, target: str) -> int:
    """0 if the target holds exactly the server-computed expectation, else 1.

    The two tables live in different databases, so each side computes an order-independent
    checksum (row count and the sum of 64-bit hashes of the row texts) and they are compared.
    """
    import asyncpg

    check = "SELECT count(*), sum(hashtextextended(t::text, 0)::numeric) FROM {} t"
    src = await asyncpg.connect(source)
    tgt = await asyncpg.connect(target)
    try:
        # Aggregates: one row each, always.
        expected = await src.fetchrow(check.format("bench_expected"))
        actual = await tgt.fetchrow(check.format("people"))
        assert expected is not None and actual is not None
        return 0 if tuple(expected) == tuple(actual) else 1
    finally:
        await src.close()
        await tgt.close()
