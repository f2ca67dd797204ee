"""(e) to (i): pgferry itself, through its public API.

Source and target are the same database (see the README: ``INSERT … SELECT`` can only work
within one), and the target is the pre-created empty ``bench_dst`` in ``append`` mode.
Everything else is pgferry's defaults (batch size, queue depth, ``workers`` and ``pipelines``
``auto``); how pgferry chose to run (one pipeline or several, inline or a pool) is read from its
log and reported with the details.
"""

from __future__ import annotations

import logging
from typing import Any

import pgferry
from benchmarks.methods.common import MethodConfig
from benchmarks.workload import SOURCE_TABLE, TARGET_TABLE

__all__ = ["arrow", "batch", "no_transform", "polars", "row"]


def no_transform(config: MethodConfig) -> dict[str, Any]:
    """(e) No transform: the source query does the split, pgferry takes its binary pipe."""
    return _run(config, {"query": config.transform_sql}, None)


def row(config: MethodConfig) -> dict[str, Any]:
    """(f) The standard row transform, ``pgferry.demo:split_name``."""
    return _run(config, {"table": SOURCE_TABLE, "key": "id"}, "pgferry.demo:split_name")


def batch(config: MethodConfig) -> dict[str, Any]:
    """(g) The same transform as a batch transform, ``pgferry.demo:split_name_batch``."""
    return _run(config, {"table": SOURCE_TABLE, "key": "id"}, "pgferry.demo:split_name_batch")


def arrow(config: MethodConfig) -> dict[str, Any]:
    """(h) The same transform with ``pyarrow.compute``: the columnar lane."""
    return _run(config, {"table": SOURCE_TABLE, "key": "id"}, "pgferry.demo:split_name_arrow")


def polars(config: MethodConfig) -> dict[str, Any]:
    """(i) The same transform with Polars: the columnar lane."""
    return _run(config, {"table": SOURCE_TABLE, "key": "id"}, "pgferry.demo:split_name_polars")


class _Decisions(logging.Handler):
    """Keeps pgferry's log lines that say how it chose to run (pool, pipelines, inline)."""

    _WORDS = ("pipeline", "inline", "pool")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        self.parallel = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(word in message for word in self._WORDS):
            self.messages.append(message)
            self.parallel = self.parallel or "pipelines over ranges" in message


def _run(config: MethodConfig, source: dict[str, Any], transform: str | None) -> dict[str, Any]:
    job = pgferry.Job.from_dict(
        {
            "name": f"bench-{config.method}",
            "source": {"dsn": config.dsn, **source},
            "target": {"dsn": config.dsn, "table": TARGET_TABLE, "mode": "append"},
            "transform": transform,
        }
    )
    decisions = _Decisions()
    logger = logging.getLogger("pgferry")
    logger.addHandler(decisions)
    logger.setLevel(logging.INFO)
    try:
        result = pgferry.run(job)
    finally:
        logger.removeHandler(decisions)
    stages = {
        name: {"busy_s": round(s.busy_s, 3), "wait_s": round(s.wait_s, 3)}
        for name, s in result.stages.items()
    }
    return {
        "path": result.path,
        "workers": result.workers,
        # RunResult.workers counts the pipelines when there are several; the log says which.
        "pipelines": result.workers if decisions.parallel else 1,
        "decisions": decisions.messages,
        "batches": result.batches,
        "rows_written": result.rows_written,
        "duration_s": round(result.duration_s, 3),
        "stages": stages,
    }
