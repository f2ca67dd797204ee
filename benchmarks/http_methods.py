"""The client side of the HTTP benchmark: ``python -m benchmarks.http_methods METHOD DSN URL ROWS``.

Each method reads rows ``id <= ROWS`` of ``bench_src`` and sends them to ``URL``; it prints one
JSON line with the time the transfer took (without interpreter start-up) and its own peak RSS.

* ``pgferry`` / ``pgferry-tuned``: a job with ``target.http`` at its defaults / tuned.
* ``etlhelper``: ETLHelper's "Database to API" recipe as its docs give it: rows fetched in
  5,000-row chunks, and for each chunk ``asyncio.run()`` of a coroutine that opens a new
  ``aiohttp.ClientSession`` and ``gather``s one POST per row; no retries, no timeouts.
* ``seq-row``: a ``requests.Session`` loop, one POST per row.
* ``seq-batch``: a ``requests.Session`` loop, one POST per 500 rows (a JSON array).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import resource
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

QUERY = "SELECT * FROM bench_src WHERE id <= %s ORDER BY id"


def _default(value: Any) -> Any:
    # What the recipe's transform does: values json cannot write become text.
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return str(value)


def _chunks(dsn: str, rows: int, size: int) -> Iterator[list[dict[str, Any]]]:
    """ETLHelper's ``iter_chunks``: a named (server-side) cursor read with ``fetchmany``."""
    import psycopg2
    import psycopg2.extras

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor("bench", cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.itersize = size
            cur.execute(QUERY, (rows,))
            while True:
                chunk = cur.fetchmany(size)
                if not chunk:
                    return
                yield [dict(r) for r in chunk]
    finally:
        conn.close()


def run_pgferry(dsn: str, url: str, rows: int, *, tuned: bool) -> dict[str, Any]:
    import pgferry

    http: dict[str, Any] = {"url": url}
    if tuned:
        # Fewer, larger requests and more of them in flight; batch_size stays at its default
        # (10,000) so that memory stays where the defaults keep it.
        http.update(rows_per_request=1_000, concurrency=16)
    job = pgferry.Job.from_dict(
        {
            "name": f"bench-{uuid.uuid4().hex[:8]}",
            "source": {"dsn": dsn, "query": "SELECT * FROM bench_src WHERE id <= $1",
                       "params": [rows], "key": "id"},
            "target": {"http": http},
            "state": {"dsn": dsn},
        }
    )  # fmt: skip
    result = pgferry.run(job)
    return {
        "rows": result.rows_written,
        "stages": {k: round(v.busy_s, 2) for k, v in result.stages.items()},
    }


def run_pgferry_profiled(dsn: str, url: str, rows: int) -> dict[str, Any]:
    """pgferry at its defaults under cProfile: the functions with the most own time."""
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.enable()
    detail = run_pgferry(dsn, url, rows, tuned=False)
    profile.disable()
    stats = pstats.Stats(profile)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:10]  # type: ignore[attr-defined]
    detail["profile"] = [
        {
            "function": f"{Path(f).name}:{line}({name})",
            "own_s": round(v[2], 2),
            "share": round(v[2] / total, 3),
        }
        for (f, line, name), v in top
    ]
    return detail


def run_etlhelper(dsn: str, url: str, rows: int) -> dict[str, Any]:
    import aiohttp

    async def post_one(item: dict[str, Any], session: aiohttp.ClientSession) -> None:
        response = await session.post(
            url, data=json.dumps(item, default=_default),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        response.raise_for_status()

    async def post_chunk(chunk: list[dict[str, Any]]) -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*[post_one(item, session) for item in chunk])

    sent = 0
    for chunk in _chunks(dsn, rows, 5_000):
        asyncio.run(post_chunk(chunk))
        sent += len(chunk)
    return {"rows": sent}


def run_sequential(dsn: str, url: str, rows: int, per_request: int) -> dict[str, Any]:
    import requests

    sent = 0
    with requests.Session() as session:
        for chunk in _chunks(dsn, rows, 5_000):
            for i in range(0, len(chunk), per_request):
                part = chunk[i : i + per_request]
                body = part[0] if per_request == 1 else part
                response = session.post(
                    url, data=json.dumps(body, default=_default),
                    headers={"Content-Type": "application/json"},
                )  # fmt: skip
                response.raise_for_status()
                sent += len(part)
    return {"rows": sent}


def vmhwm() -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def main() -> None:
    method, dsn, url, rows_text = sys.argv[1:5]
    rows = int(rows_text)
    start = time.perf_counter()
    if method in ("pgferry", "pgferry-tuned"):
        detail = run_pgferry(dsn, url, rows, tuned=method == "pgferry-tuned")
    elif method == "pgferry-profile":
        detail = run_pgferry_profiled(dsn, url, rows)
    elif method == "etlhelper":
        detail = run_etlhelper(dsn, url, rows)
    elif method == "seq-row":
        detail = run_sequential(dsn, url, rows, 1)
    elif method == "seq-batch":
        detail = run_sequential(dsn, url, rows, 500)
    else:
        raise SystemExit(f"unknown method {method!r}")
    transfer = time.perf_counter() - start
    peak = vmhwm() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"transfer_s": transfer, "vmhwm_bytes": peak, **detail}), flush=True)


if __name__ == "__main__":
    main()
