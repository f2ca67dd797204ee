"""What crosses the queues between stages: one small typed item per kind.

::

    extract ──Batch──► transform ──Transformed──► load ──► sink
                                  (a future of its TransformOutput, in extraction order)

Items hold whole batches, never single rows: a queue item costs one ``put``/``get`` however many
rows it carries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from pgferry.engine.functions import Columns, TransformReject

if TYPE_CHECKING:
    import asyncpg

__all__ = ["Batch", "TransformOutput", "Transformed", "record_rows"]


def record_rows(records: Sequence[asyncpg.Record]) -> Sequence[Sequence[Any]]:
    """Records read from the source, as the rows a batch holds (the same objects, no copy).

    An asyncpg ``Record`` is a sequence at run time (indexed by position, sized, iterable, sliced
    into tuples), but its type does not derive from ``Sequence``: this is the one place where
    records become rows.
    """
    return cast("Sequence[Sequence[Any]]", records)


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows of one batch, in extraction order (extract → transform).

    Attributes:
        seq: 0-based position of the batch in extraction order; batches commit in this order.
        columns: Column names of ``rows``.
        rows: Row values as sequences (asyncpg records from the reader).
        rows_read: Source rows this batch came from.
    """

    seq: int
    columns: tuple[str, ...]
    rows: Sequence[Sequence[Any]]
    rows_read: int


class TransformOutput(NamedTuple):
    """A transformed batch: plain data, so that it crosses a process boundary as it is.

    Attributes:
        columns: The output's column names (``None``: the transform dropped every row).
        rows: The output rows, as tuples in ``columns`` order.
        cpu_s: CPU seconds the transform took in a pool worker (0 when inline: the stage
            times it itself).
        rejects: Rows the transform set aside, as ``(error class, message, row)``.
    """

    columns: Columns | None
    rows: Sequence[Sequence[Any]]
    cpu_s: float
    rejects: list[TransformReject]


@dataclass(frozen=True, slots=True)
class Transformed:
    """A batch on its way to the load stage (transform → load).

    Attributes:
        seq: The batch's position in extraction order.
        rows_read: Source rows the batch came from.
        position: The ledger position after this batch (watermark or key, as text), if any.
        output: Resolves to the batch's :class:`TransformOutput`, or to the transform's error;
            the load stage awaits these in order, so batches commit in extraction order.
        deferred: For an inline transform, what resolves ``output``: the load stage calls it
            just before it writes the batch (:mod:`pgferry.engine.transform` says why).
    """

    seq: int
    rows_read: int
    position: list[str] | None
    output: asyncio.Future[TransformOutput]
    deferred: Callable[[], None] | None = None
