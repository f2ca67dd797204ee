"""The HTTP section of ``make bench``: rows to an endpoint that takes 20 ms per request.

``python -m benchmarks.http_bench --rows 1000000`` starts an embedded PostgreSQL with the
standard workload and the endpoint :mod:`benchmarks.http_server` in its own process, then runs
every method of :mod:`benchmarks.http_methods` in a fresh child process and checks that the
endpoint received exactly the rows sent. The slow baselines send fewer rows (their rows/s does
not depend on the count; a million rows one request at a time would take hours): the row
count of each method is in the table.

Columns: rows/s and requests/s over the child's wall time (interpreter start-up included);
client CPU µs/row = user + system CPU of the child from ``getrusage(RUSAGE_CHILDREN)``; peak RSS
= the child's ``VmHWM``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.database import create_workload
from benchmarks.workload import workload_statements

RESULTS = Path(__file__).parent / "results"
DATABASE = "pgferry_http_bench"
METHODS = {
    # method: (label, share of --rows it sends, at most this many rows)
    "pgferry": ("pgferry, defaults (500 rows/request, concurrency 8)", 1.0, None),
    "pgferry-tuned": ("pgferry, tuned (1,000 rows/request, concurrency 16)", 1.0, None),
    "etlhelper": ("ETLHelper recipe (POST per row, gather per 5,000, session per chunk)",
                  1.0, 50_000),
    "seq-batch": ("sequential loop, 500 rows per POST", 1.0, 100_000),
    "seq-row": ("sequential loop, one POST per row", 1.0, 500),
    "pgferry-profile": ("pgferry, defaults, under cProfile (where the time goes)", 1.0, 200_000),
}  # fmt: skip


def _get(url: str, method: str = "GET") -> dict[str, Any]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def run_method(method: str, dsn: str, base: str, rows: int) -> dict[str, Any]:
    _get(f"{base}/reset", "POST")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.http_methods", method, dsn, f"{base}/ingest",
         str(rows)],
        capture_output=True, text=True, timeout=3_600, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        return {"method": method, "rows": rows, "failed": proc.stderr[-2_000:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    stats = _get(f"{base}/stats")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "method": method,
        "rows": rows,
        "wall_s": wall,
        "transfer_s": out["transfer_s"],
        "rows_per_s": rows / wall,
        "requests": stats["requests"],
        "requests_per_s": stats["requests"] / wall,
        "cpu_us_per_row": cpu / rows * 1e6,
        "peak_rss_mib": out["vmhwm_bytes"] / 2**20,
        "verified": stats["rows"] == rows and out["rows"] == rows,
        "received": stats["rows"],
        "stages": out.get("stages"),
        "profile": out.get("profile"),
    }


def table(results: list[dict[str, Any]], etl: float | None) -> str:
    lines = [
        "| method | rows | wall s | rows/s | requests/s | × ETLHelper | client CPU µs/row "  # noqa: RUF001
        "| peak RSS MiB | verified |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["method"] == "pgferry-profile":
            continue
        label = METHODS[r["method"]][0]
        if "failed" in r:
            lines.append(f"| {label} | {r['rows']:,} | | | | | | | FAILED |")
            continue
        ratio = f"{r['rows_per_s'] / etl:.1f}×" if etl else ""  # noqa: RUF001
        lines.append(
            f"| {label} | {r['rows']:,} | {r['wall_s']:.2f} | {r['rows_per_s']:,.0f} "
            f"| {r['requests_per_s']:,.0f} | {ratio} | {r['cpu_us_per_row']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {'ok' if r['verified'] else 'WRONG'} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--delay", type=float, default=0.02, help="server seconds per request")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]

    from pgferry.embedded import EmbeddedPostgres

    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.http_server", "--delay", str(args.delay)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        port = json.loads(server.stdout.readline())["port"]
        base = f"http://127.0.0.1:{port}"
        with EmbeddedPostgres() as pg:
            dsn = pg.create_database(DATABASE)
            statements, _ = workload_statements(args.rows)
            asyncio.run(create_workload(dsn, statements))
            results = []
            for method in methods:
                _, share, cap = METHODS[method]
                rows = int(args.rows * share)
                rows = min(rows, cap) if cap else rows
                print(f"{method}: {rows:,} rows …", file=sys.stderr, flush=True)
                results.append(run_method(method, dsn, base, rows))
    finally:
        server.kill()
        server.wait()
    etl = next((r["rows_per_s"] for r in results if r["method"] == "etlhelper"
                and "failed" not in r), None)  # fmt: skip
    text = (
        f"HTTP benchmark: endpoint sleeping {args.delay * 1000:g} ms per request, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
        + table(results, etl)
        + "\n"
    )
    for r in results:
        if r.get("stages"):
            busy = ", ".join(f"{k} {v:.1f} s" for k, v in r["stages"].items())
            text += f"\n{r['method']}: stage busy time {busy} (transfer {r['transfer_s']:.1f} s)\n"
        if r.get("profile"):
            text += "\n| function (pgferry, cProfile) | own s | share |\n|---|---|---|\n"
            text += "".join(
                f"| `{p['function']}` | {p['own_s']:.2f} | {p['share'] * 100:.0f} % |\n"
                for p in r["profile"]
            )
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "http_latest.md").write_text(text)
    (args.results / "http_latest.json").write_text(json.dumps(results, indent=2))
    return 0 if all(r.get("verified") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
