"""Measure ``pgferry_partitioned_copy`` on the stack with 1, 2 and 4 mapped partitions.

For docs/scaling.md: rows/s of the copy (from the first mapped task's start to the last one's
end, as the scheduler recorded them) and the connections pgferry held on the source and on the
target (peak of ``pg_stat_activity``, sampled every 0.1 s while the run lasts).

Usage (a stack must run: ``make stack``):
    python scripts/measure_scaling.py [--rows 2000000] [--ranges 1 2 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "stack"))
from stack_support import Airflow  # noqa: E402

STATE = Path(os.environ.get("PGFERRY_STACK_DIR") or REPO / ".stack") / "stack.json"
DAG = "pgferry_partitioned_copy"
PGFERRY_CONNECTIONS = """
SELECT count(*) FILTER (WHERE application_name LIKE 'pgferry:%'), count(*)
FROM pg_stat_activity WHERE backend_type = 'client backend'
"""


async def _one(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def query(dsn: str, sql: str, *args: Any) -> Any:
    return asyncio.run(_one(dsn, sql, *args))


class Sampler(threading.Thread):
    """Peak pgferry connections on the source and target servers while a run lasts."""

    def __init__(self, source: str, target: str) -> None:
        super().__init__(daemon=True)
        self.dsns = {"source": source, "target": target}
        self.peak = {"source": 0, "target": 0}
        self.stop = threading.Event()

    def run(self) -> None:
        async def loop() -> None:
            conns = {k: await asyncpg.connect(v) for k, v in self.dsns.items()}
            try:
                while not self.stop.is_set():
                    for side, conn in conns.items():
                        mine, _ = await conn.fetchrow(PGFERRY_CONNECTIONS)
                        self.peak[side] = max(self.peak[side], int(mine))
                    await asyncio.sleep(0.1)
            finally:
                for conn in conns.values():
                    await conn.close()

        asyncio.run(loop())


def parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def measure(airflow: Airflow, state: dict[str, Any], ranges: int) -> dict[str, Any]:
    source, target = state["dsns"]["airflow_source"], state["dsns"]["warehouse"]
    query(target, "DROP TABLE IF EXISTS public.events_copy")
    sampler = Sampler(source, target)
    sampler.start()
    began = time.monotonic()
    run_id = airflow.trigger(DAG, {"ranges": ranges})
    status = airflow.wait_run(DAG, run_id, timeout=1800)
    sampler.stop.set()
    sampler.join()
    assert status == "success", f"run {run_id}: {status}"
    tis = [t for t in airflow.task_instances(DAG, run_id) if t["task_id"] == "copy_range"]
    results = [airflow.xcom(DAG, run_id, "copy_range", t["map_index"]) for t in tis]
    start = min(parse(t["start_date"]) for t in tis)
    end = max(parse(t["end_date"]) for t in tis)
    wall = (end - start).total_seconds()
    rows = sum(r["rows_written"] for r in results)
    hosts = sorted({t["hostname"] for t in tis})
    return {
        "ranges": ranges,
        "rows": rows,
        "copy_wall_s": round(wall, 1),
        "rows_per_s": round(rows / wall),
        "run_wall_s": round(time.monotonic() - began, 1),
        "task_rows_per_s": sorted(
            round(r["rows_written"] / max(r["duration_s"], 1e-9)) for r in results
        ),
        "peak_pgferry_connections": sampler.peak,
        "workers": hosts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--ranges", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    state = json.loads(STATE.read_text())
    airflow = Airflow(state["airflow_url"])
    source = state["dsns"]["airflow_source"]
    have = query(source, "SELECT coalesce(max(id), 0) FROM public.events")[0][0]
    if have < args.rows:
        print(f"growing public.events from {have} to {args.rows} rows", flush=True)
        query(
            source,
            "INSERT INTO public.events SELECT g, (ARRAY['click', 'view', 'buy'])[1 + g % 3], "
            "jsonb_build_object('n', g), timestamptz '2024-01-01' + g * interval '1 second' "
            "FROM generate_series($1::bigint, $2::bigint) g",
            have + 1,
            args.rows,
        )
        query(source, "ANALYZE public.events")
    airflow.unpause(DAG)
    measured = []
    for n in args.ranges:
        row = measure(airflow, state, n)
        measured.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(measured, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
