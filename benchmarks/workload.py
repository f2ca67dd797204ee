"""The standard workload: where its files are, its statements, and the transform they define.

The shared workload (``../shared/bench/workload.sql`` and ``transform.py``, relative to the
repository root) is used when it exists, so that every figure is measured on the same workload
as the reference figures; otherwise pgferry's packaged copy (``pgferry.demo``), which a unit test
of pgferry keeps equal to it.

This module is pure (no database, no pgferry import) and is imported by every benchmark child
process, so it stays light.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "EXPECTED_VIEW",
    "REPO_ROOT",
    "SHARED_BENCH",
    "SOURCE_TABLE",
    "TARGET_TABLE",
    "load_split_name",
    "parse_workload",
    "source_select",
    "transform_file",
    "transform_select",
    "workload_statements",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCH = REPO_ROOT.parent / "shared" / "bench"
SOURCE_TABLE = "bench_src"
TARGET_TABLE = "bench_dst"
EXPECTED_VIEW = "bench_expected"

_VIEW = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+" + EXPECTED_VIEW + r"\s+AS\s+(SELECT\b.*)\Z",
    re.IGNORECASE | re.DOTALL,
)
_ROWS = re.compile(r":rows\b")


def parse_workload(text: str, rows: int) -> list[str]:
    """The statements of a workload file with ``:rows`` filled in, one string each.

    psql meta-commands (``\\if``, ``\\set`` …) and whole-line ``--`` comments are dropped; the
    rest is split on ``;``. The statements are returned one by one because ``VACUUM`` must run
    outside a transaction block.

    Raises:
        ValueError: ``rows`` is not a positive integer.
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be a positive integer, not {rows!r}")
    kept = [line for line in text.splitlines() if not line.lstrip().startswith(("\\", "--"))]
    body = _ROWS.sub(str(rows), "\n".join(kept))
    return [statement.strip() for statement in body.split(";") if statement.strip()]


def workload_statements(rows: int) -> tuple[list[str], str]:
    """The statements of the standard workload and where they came from.

    Returns:
        The statements (see :func:`parse_workload`) and the path of the file, or
        ``pgferry.demo`` for the packaged copy.
    """
    shared = SHARED_BENCH / "workload.sql"
    if shared.is_file():
        return parse_workload(shared.read_text(encoding="utf-8"), rows), str(shared)
    from pgferry.demo import workload_statements as packaged

    return packaged(rows), "pgferry.demo"


def transform_select(statements: list[str]) -> str:
    """The ``SELECT`` of the ``bench_expected`` view: the standard transform written in SQL.

    Methods that do the transform on the server (``INSERT … SELECT``, the COPY pipe, pgferry
    without a transform) run exactly this query, so they compute what the check expects.

    Raises:
        ValueError: No statement creates the view.
    """
    for statement in statements:
        match = _VIEW.match(statement)
        if match:
            return match.group(1).strip()
    raise ValueError(f"the workload does not create the view {EXPECTED_VIEW}")


def source_select() -> str:
    """The query the row-by-row methods read: the source table as it is."""
    return f"SELECT * FROM {SOURCE_TABLE}"  # noqa: S608 -- a constant table name


def transform_file() -> str | None:
    """Path of the shared ``transform.py``, or ``None`` when only the packaged copy exists."""
    shared = SHARED_BENCH / "transform.py"
    return str(shared) if shared.is_file() else None


@functools.cache
def load_split_name(path: str | None) -> Callable[[Any], dict[str, Any]]:
    """The standard row transform ``split_name``, imported from ``path`` (a ``transform.py``).

    With ``path=None``, pgferry's packaged copy ``pgferry.demo.split_name``.
    """
    if path is None:
        from pgferry.demo import split_name

        return split_name
    spec = importlib.util.spec_from_file_location("pgferry_bench_transform", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the benchmark transform from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn: Callable[[Any], dict[str, Any]] = module.split_name
    return fn
