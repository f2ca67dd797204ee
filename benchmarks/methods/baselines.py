"""The baselines, with asyncpg only: (a) ``INSERT … SELECT``, (b) the binary COPY pipe, (c) the
naive row loop.

(a) and (b) do no per-row work in Python at all: together they are the physical limit of the
machine and server. (c) is what one writes first with asyncpg.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from benchmarks.methods.common import MethodConfig, run_async
from benchmarks.workload import TARGET_TABLE, load_split_name

__all__ = ["copy_pipe", "insert_select", "naive_loop"]

_END = None
_PIPE_QUEUE = 16  # chunks; pgferry's pipe uses max(8, 4 * queue_depth) = 16 by default


def insert_select(config: MethodConfig) -> dict[str, Any]:
    """(a) ``INSERT INTO bench_dst SELECT …``: the server does everything."""

    async def main() -> str:
        conn = await asyncpg.connect(config.dsn)
        try:
            # The query is the workload's own view definition, not input.
            insert = f"INSERT INTO {TARGET_TABLE} {config.transform_sql}"
            status: str = await conn.execute(insert)
            return status
        finally:
            await conn.close()

    return {"status": run_async(main())}


def copy_pipe(config: MethodConfig) -> dict[str, Any]:
    """(b) ``copy_from_query(…, format='binary')`` streamed into ``copy_to_table(…)``.

    Two connections; raw COPY chunks pass through a bounded queue; no row is decoded.
    """

    async def main() -> dict[str, Any]:
        src = await asyncpg.connect(config.dsn)
        tgt = await asyncpg.connect(config.dsn)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=_PIPE_QUEUE)
        chunks = 0

        async def sink(chunk: bytes) -> None:
            nonlocal chunks
            chunks += 1
            await queue.put(chunk)

        async def produce() -> None:
            await src.copy_from_query(config.transform_sql, output=sink, format="binary")
            # Only after a complete read: on an error the task group cancels the load, which
            # aborts the COPY instead of committing a truncated stream.
            await queue.put(_END)

        async def source() -> AsyncIterator[bytes]:
            while (chunk := await queue.get()) is not _END:
                yield chunk

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(produce())
                load = group.create_task(
                    tgt.copy_to_table(
                        TARGET_TABLE,
                        columns=list(config.target_columns),
                        source=source(),
                        format="binary",
                    )
                )
        finally:
            await src.close()
            await tgt.close()
        return {"status": load.result(), "chunks": chunks}

    return run_async(main())


def naive_loop(config: MethodConfig) -> dict[str, Any]:
    """(c) Fetch a batch from a cursor, transform each row, COPY the batch; one at a time."""
    split_name = load_split_name(config.transform_file)

    async def main() -> dict[str, Any]:
        src = await asyncpg.connect(config.dsn)
        tgt = await asyncpg.connect(config.dsn)
        batches = 0
        try:
            async with src.transaction(isolation="repeatable_read", readonly=True):
                cursor = await src.cursor(config.source_sql)
                while records := await cursor.fetch(config.batch_size):
                    # An asyncpg Record is a mapping by column name: the row transform takes it.
                    rows = [tuple(split_name(record).values()) for record in records]
                    await tgt.copy_records_to_table(
                        TARGET_TABLE, records=rows, columns=list(config.target_columns)
                    )
                    batches += 1
        finally:
            await src.close()
            await tgt.close()
        return {"batches": batches, "batch_size": config.batch_size}

    return run_async(main())
