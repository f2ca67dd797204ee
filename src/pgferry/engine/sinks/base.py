"""The interface every sink offers to the load stage, and the shape of a rejected row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pgferry.result import RunResult
from pgferry.schema import Column

__all__ = ["Reject", "Sink"]

Reject = tuple[str, str, str, str | None, dict[str, Any]]
"""A rejected row: ``(stage, error class, message, column, row as a dict)``."""


class Sink(Protocol):
    """Where the load stage writes: one batch at a time, each with its ledger row.

    A sink is prepared once (its columns decided), then takes batches in extraction order. Each
    :meth:`write` makes the batch, its rejects and its ledger row durable together, so that a
    crash leaves "all batches up to k" and the next run continues after ``k``.

    Attributes:
        ready: The sink is prepared: its columns are known.
        columns: The columns written, in the order rows carry them.
        result: The run's result, whose counters the sink updates as batches commit.
    """

    ready: bool
    columns: tuple[str, ...]
    result: RunResult

    async def prepare(self, incoming: Sequence[Column], typed: set[str]) -> None:
        """Create or check the destination for ``incoming`` columns (``typed``: those whose
        types are known exactly, not inferred from values)."""

    async def attach(self, columns: Sequence[str]) -> None:
        """Write into a destination that a parallel run's coordinator prepared."""

    async def prepare_rows(self) -> None:
        """Get ready to take decoded rows (codecs on the connection)."""

    async def write(
        self,
        seq: int,
        rows: Sequence[Sequence[Any]],
        *,
        rows_read: int,
        position: list[str] | None,
        rejects: Sequence[Reject] = (),
    ) -> None:
        """Write batch ``seq`` with its rejects and its ledger row, durably and together."""

    async def finish(self) -> None:
        """After the last batch: commit what the run holds open, swap, record the end."""

    async def abort(self) -> None:
        """Undo what a failed attempt left behind (open transaction, shadow table)."""
