"""The methods the benchmark compares, keyed by letter.

Each method is a function ``run(config: MethodConfig) -> dict`` in one of the modules here,
named by an import path so that a child process imports only what its method needs (the
baselines never import pgferry). It moves ``bench_src`` through the standard transform into the
empty ``bench_dst`` and returns details for the report.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.methods.common import MethodConfig

__all__ = ["METHODS", "Method", "MethodConfig", "parse_methods"]


@dataclass(frozen=True)
class Method:
    """One way of moving the workload.

    Attributes:
        key: The letter used on the command line and in the report.
        label: What the report calls it.
        target: ``module:function`` of its ``run(config)``.
        baseline: ``pipe`` or ``insert`` for the two physical limits, else empty.
    """

    key: str
    label: str
    target: str
    baseline: str = ""

    def load(self) -> Callable[[MethodConfig], dict[str, Any]]:
        """Import and return the method's ``run`` function."""
        module, _, name = self.target.partition(":")
        fn: Callable[[MethodConfig], dict[str, Any]] = getattr(
            importlib.import_module(module), name
        )
        return fn


_BASE = "benchmarks.methods.baselines"
METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method("a", "`INSERT … SELECT` (transform in SQL)", f"{_BASE}:insert_select", "insert"),
        Method("b", "asyncpg binary COPY pipe (transform in SQL)", f"{_BASE}:copy_pipe", "pipe"),
        Method(
            "c",
            "asyncpg cursor → Python transform → `copy_records_to_table`, sequential",
            f"{_BASE}:naive_loop",
        ),
        Method(
            "d",
            "blog post: one record at a time through `asyncio.Queue(1000)`, process pool",
            "benchmarks.methods.blog:run",
        ),
        Method(
            "e",
            "pgferry, no transform (the transform in the source query)",
            "benchmarks.methods.ferry:no_transform",
        ),
        Method("f", "pgferry, row transform `split_name`", "benchmarks.methods.ferry:row"),
        Method(
            "g", "pgferry, batch transform `split_name_batch`", "benchmarks.methods.ferry:batch"
        ),
        Method(
            "h",
            "pgferry, Arrow transform `split_name_arrow` (pyarrow.compute)",
            "benchmarks.methods.ferry:arrow",
        ),
        Method(
            "i", "pgferry, Polars transform `split_name_polars`", "benchmarks.methods.ferry:polars"
        ),
    )
}


def parse_methods(text: str) -> list[str]:
    """``"a,c,f"`` (or ``"acf"``, any case) → ``["a", "c", "f"]`` in the order given.

    Raises:
        ValueError: An unknown or repeated method, or none at all.
    """
    letters = [ch for ch in text.lower() if ch != "," and not ch.isspace()]
    unknown = [k for k in letters if k not in METHODS]
    if unknown:
        choices = ", ".join(METHODS)
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {choices}")
    if len(set(letters)) != len(letters):
        raise ValueError(f"a method is given twice in {text!r}")
    if not letters:
        raise ValueError("no method given")
    return letters
