"""(e), (f), (g): pgferry itself, through its public API.

Source and target are the same database (see the README: ``INSERT … SELECT`` can only work
within one), and the target is the pre-created empty ``bench_dst`` in ``append`` mode.
Everything else is pgferry's defaults (batch size, queue depth, ``workers: auto``).
"""

from __future__ import annotations

from typing import Any

import pgferry
from benchmarks.methods.common import MethodConfig
from benchmarks.workload import SOURCE_TABLE, TARGET_TABLE

__all__ = ["batch", "no_transform", "row"]


def no_transform(config: MethodConfig) -> dict[str, Any]:
    """(e) No transform: the source query does the split, pgferry takes its binary pipe."""
    return _run(config, {"query": config.transform_sql}, None)


def row(config: MethodConfig) -> dict[str, Any]:
    """(f) The standard row transform, ``pgferry.demo:split_name``."""
    return _run(config, {"table": SOURCE_TABLE, "key": "id"}, "pgferry.demo:split_name")


def batch(config: MethodConfig) -> dict[str, Any]:
    """(g) The same transform as a batch transform, ``pgferry.demo:split_name_batch``."""
    return _run(config, {"table": SOURCE_TABLE, "key": "id"}, "pgferry.demo:split_name_batch")


def _run(config: MethodConfig, source: dict[str, Any], transform: str | None) -> dict[str, Any]:
    job = pgferry.Job.from_dict(
        {
            "name": f"bench-{config.method}",
            "source": {"dsn": config.dsn, **source},
            "target": {"dsn": config.dsn, "table": TARGET_TABLE, "mode": "append"},
            "transform": transform,
        }
    )
    result = pgferry.run(job)
    stages = {
        name: {"busy_s": round(s.busy_s, 3), "wait_s": round(s.wait_s, 3)}
        for name, s in result.stages.items()
    }
    return {
        "path": result.path,
        "workers": result.workers,
        "batches": result.batches,
        "rows_written": result.rows_written,
        "duration_s": round(result.duration_s, 3),
        "stages": stages,
    }
