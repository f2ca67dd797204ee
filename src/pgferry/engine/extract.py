"""Extract: read the source inside one consistent snapshot, in whole batches."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import asyncpg

from pgferry.engine.bounds import strip_probe
from pgferry.engine.items import Batch, record_rows
from pgferry.engine.stages import END
from pgferry.errors import ExtractError, PgferryError, TransientExtractError
from pgferry.result import StageStats
from pgferry.retry import is_transient

__all__ = ["extract_batches", "extract_failure", "pipe_out", "set_snapshot_statement"]


# Decoding can fail too (a BC date has no Python equivalent): those are not transient.
_READ_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    ValueError,
    OverflowError,
)


_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")


def set_snapshot_statement(snapshot: str) -> str:
    """``SET TRANSACTION SNAPSHOT '<id>'`` for an id from ``pg_export_snapshot()``.

    The statement takes no bind parameter, so the id is checked against the server's format
    (hexadecimal fields) before it becomes part of the text.

    Raises:
        ValueError: ``snapshot`` is not a snapshot id.
    """
    if not _SNAPSHOT_ID.fullmatch(snapshot):
        raise ValueError(f"not a snapshot id: {snapshot!r}")
    return f"SET TRANSACTION SNAPSHOT '{snapshot}'"


def extract_failure(exc: BaseException, *, job: str, batch: int | None) -> PgferryError:
    """Wrap a driver error as an :class:`ExtractError`, transient where a retry may help."""
    cls = TransientExtractError if is_transient(exc) else ExtractError
    return cls(f"reading the source failed: {type(exc).__name__}: {exc}", job=job, batch=batch)


async def extract_batches(
    conn: asyncpg.Connection,
    query: str,
    args: Sequence[Any],
    columns: tuple[str, ...],
    *,
    batch_size: int,
    queue: asyncio.Queue[Any],
    stats: StageStats,
    job: str,
    snapshot: str | None = None,
    on_snapshot: Callable[[], None] | None = None,
    arrays: Sequence[str] = (),
) -> int:
    """Read ``query`` with a server-side cursor and put :class:`Batch` objects on ``queue``.

    The cursor lives in a ``REPEATABLE READ READ ONLY`` transaction, so every batch comes from
    one snapshot however long the run takes. A full queue blocks the reader (backpressure).

    Args:
        snapshot: An exported snapshot to read in (``SET TRANSACTION SNAPSHOT``), shared with
            the other readers of a parallel run.
        on_snapshot: Called once ``snapshot`` is imported (the exporting transaction may end).
        arrays: The array columns checked by ``query``'s last column, which is dropped from
            every batch (:mod:`pgferry.engine.bounds`).

    Returns:
        The number of rows read. :data:`END` is put on the queue after the last batch.
    """
    seq = 0
    total = 0
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            if snapshot is not None:
                await conn.execute(set_snapshot_statement(snapshot))
                if on_snapshot is not None:
                    on_snapshot()
            cursor = await conn.cursor(query, *args)
            while True:
                with stats.busy():
                    records = await cursor.fetch(batch_size)
                if not records:
                    break
                rows = (
                    strip_probe(records, arrays, job=job, batch=seq)
                    if arrays
                    else record_rows(records)
                )
                total += len(rows)
                batch = Batch(seq, columns, rows, len(rows))
                del records, rows  # the queue holds the batch; nothing here may outlive it
                with stats.waiting():
                    await queue.put(batch)
                del batch
                seq += 1
    except _READ_ERRORS as exc:
        raise extract_failure(exc, job=job, batch=seq) from exc
    with stats.waiting():
        await queue.put(END)
    return total


async def pipe_out(
    conn: asyncpg.Connection,
    query: str,
    *,
    sink: Callable[[bytes], Coroutine[Any, Any, None]],
    job: str,
) -> None:
    """Stream ``COPY (query) TO STDOUT (FORMAT binary)`` into ``sink``, chunk by chunk.

    No row is decoded: this is the path for jobs without a transform. The sink applies
    backpressure by blocking, which stops asyncpg reading from the socket.
    """
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.copy_from_query(query, output=sink, format="binary")
    except _READ_ERRORS as exc:
        raise extract_failure(exc, job=job, batch=0) from exc
