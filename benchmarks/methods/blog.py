"""(d) The design of the blog post that started pgferry, implemented faithfully.

* The reader iterates over a server-side cursor and puts every record, one at a time, on an
  ``asyncio.Queue(maxsize=1000)`` (as a dict: asyncpg records cannot be pickled).
* The writer takes records off the queue into a batch and flushes the batch whenever the queue
  is empty: the batch goes to a ``ProcessPoolExecutor`` (default size and start method), which
  applies the row transform, and the result is loaded with ``copy_records_to_table``.
* One correction: the records still in the batch when the end-of-stream marker arrives are
  flushed too. The post forgot this final flush and silently lost up to several hundred rows.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import asyncpg

from benchmarks.methods.common import MethodConfig, run_async
from benchmarks.workload import TARGET_TABLE, load_split_name

__all__ = ["run"]

QUEUE_SIZE = 1000
_END = None

_transform: Callable[[Any], dict[str, Any]] | None = None


def _init_worker(transform_file: str | None) -> None:
    global _transform
    _transform = load_split_name(transform_file)


def transform_batch(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Pool task: the row transform over one batch, rows back as tuples for COPY."""
    assert _transform is not None, "pool worker was not initialised"
    return [tuple(_transform(record).values()) for record in records]


def run(config: MethodConfig) -> dict[str, Any]:
    """Run the blog post's pipeline once; return batch statistics."""
    return run_async(_main(config))


async def _main(config: MethodConfig) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=QUEUE_SIZE)
    columns = list(config.target_columns)
    sizes: list[int] = []
    src = await asyncpg.connect(config.dsn)
    tgt = await asyncpg.connect(config.dsn)
    pool = ProcessPoolExecutor(initializer=_init_worker, initargs=(config.transform_file,))

    async def read() -> None:
        async with src.transaction(isolation="repeatable_read", readonly=True):
            async for record in src.cursor(config.source_sql):
                await queue.put(dict(record))
        await queue.put(_END)

    async def flush(batch: list[dict[str, Any]]) -> None:
        rows = await loop.run_in_executor(pool, transform_batch, batch)
        await tgt.copy_records_to_table(TARGET_TABLE, records=rows, columns=columns)
        sizes.append(len(batch))

    async def write() -> None:
        batch: list[dict[str, Any]] = []
        while (record := await queue.get()) is not _END:
            batch.append(record)
            if queue.empty():
                await flush(batch)
                batch = []
        if batch:  # the final flush
            await flush(batch)

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(read())
            group.create_task(write())
    finally:
        # Waiting for the workers also makes their CPU time count in this process's
        # RUSAGE_CHILDREN, hence in the parent's measurement.
        pool.shutdown(wait=True, cancel_futures=True)
        await src.close()
        await tgt.close()
    return {
        "batches": len(sizes),
        "mean_batch": round(sum(sizes) / len(sizes), 1) if sizes else 0,
        "max_batch": max(sizes, default=0),
        "pool_workers": os.cpu_count() or 1,  # ProcessPoolExecutor's default
        "start_method": multiprocessing.get_start_method(),
    }
