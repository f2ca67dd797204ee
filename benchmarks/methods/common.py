"""What every method gets, and how the asyncio ones run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["MethodConfig", "event_loop_name", "run_async"]

T = TypeVar("T")


@dataclass(frozen=True)
class MethodConfig:
    """The inputs of one method run, sent by the parent as JSON on the child's stdin.

    Attributes:
        method: The method's letter.
        dsn: The benchmark database: source and target tables live in it.
        database: Its name (the parent uses it to find the child's backends).
        rows: Rows in ``bench_src``.
        transform_sql: The ``SELECT`` of ``bench_expected`` (the transform in SQL).
        source_sql: The query the row-by-row methods read (``SELECT * FROM bench_src``).
        target_columns: The columns of ``bench_dst``, in order.
        transform_file: The shared ``transform.py``, or ``None`` for ``pgferry.demo``'s copy.
        batch_size: Rows per batch for the methods that batch (pgferry's default).
    """

    method: str
    dsn: str
    database: str
    rows: int
    transform_sql: str
    source_sql: str
    target_columns: tuple[str, ...]
    transform_file: str | None
    batch_size: int = 10_000

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodConfig:
        """Build from the JSON the parent sent."""
        return cls(**{**data, "target_columns": tuple(data["target_columns"])})


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    # The same choice as pgferry.run: uvloop when installed, so that no method is faster or
    # slower for its event loop alone.
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.new_event_loop
    return None


def event_loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop every method runs on."""
    return "asyncio" if _loop_factory() is None else "uvloop"


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the same event loop pgferry would use."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(coro)
