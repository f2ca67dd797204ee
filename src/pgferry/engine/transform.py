"""The transform stage: :class:`~pgferry.engine.items.Batch` in, one
:class:`~pgferry.engine.items.Transformed` out per batch, in extraction order.

The user's function runs inline, or in a process pool (:mod:`pgferry.engine.pool`) when
``workers`` says so or, for ``workers: auto``, when the first batch shows that the transform
costs clearly more than moving a batch to a worker and back. Either way the stage puts one
future per batch on its outbox in the order the batches came: a transform failure in batch
``k`` travels through that future, so the load stage commits the batches before ``k`` first.

An inline transform runs when the load stage is about to write its batch, not when the batch
arrives: the output rows are then encoded while they are still in the CPU's caches. Rows that
wait in the queues as tuples cost about a fifth more to encode and free than rows encoded at
once, rows waiting as records much less (per-step harness, 200,000 rows of the standard
workload in batches of 5,000 with two batches queued before each stage: 4.0 µs/row transforming
on arrival, 3.25 transforming before the write, 3.1 with no queue at all). Inline, nothing runs
in parallel with the transform anyway; the queues still let reading run ahead.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pgferry.engine import functions as fn_mod
from pgferry.engine.items import Batch, Transformed, TransformOutput
from pgferry.engine.plan import position_text
from pgferry.engine.stages import END
from pgferry.errors import PgferryError
from pgferry.result import RunResult
from pgferry.spec import Job

if TYPE_CHECKING:
    from pgferry.engine.pool import TransformPool

__all__ = ["TransformStage", "outbox_depth"]

log = logging.getLogger("pgferry")


def _pool_module() -> ModuleType:
    # concurrent.futures.process and multiprocessing load only when a pool starts.
    return importlib.import_module("pgferry.engine.pool")


def outbox_depth(job: Job) -> int:
    """Room on the transform stage's outbox: enough to keep every pool worker busy."""
    workers = job.workers if isinstance(job.workers, int) else None
    if job.transform is None:
        workers = 0
    pool_size = workers if workers is not None else _default_pool_size()
    return max(job.queue_depth, pool_size + 1)


def _default_pool_size() -> int:
    size: int = _pool_module().default_pool_size()
    return size


class _Deferred:
    """Transforms one batch inline when called, then lets go of its input rows."""

    __slots__ = ("batch", "output", "stage")

    def __init__(
        self, stage: TransformStage, batch: Batch, output: asyncio.Future[TransformOutput]
    ) -> None:
        self.stage: TransformStage | None = stage
        self.batch: Batch | None = batch
        self.output = output

    def __call__(self) -> None:
        stage, batch = self.stage, self.batch
        self.stage = self.batch = None
        if stage is not None and batch is not None:
            stage._inline(batch, self.output)


class TransformStage:
    """Transforms batches from ``inbox`` onto ``outbox``, inline or in a process pool.

    Args:
        job: The job (its transform, ``workers``, key and ``max_rejects``).
        fn: The loaded transform, or ``None`` to pass rows through as decoded.
        inbox: Batches from the extract stage, then :data:`~pgferry.engine.stages.END`.
        outbox: Where :class:`Transformed` items go, then ``END``.
        result: The run's result (stage timings, the pool size).
        position_index: Indexes of the ledger position's columns in the source rows.
    """

    def __init__(
        self,
        job: Job,
        fn: Callable[..., Any] | None,
        inbox: asyncio.Queue[Any],
        outbox: asyncio.Queue[Any],
        result: RunResult,
        position_index: list[int],
    ) -> None:
        self.job = job
        self.fn = fn
        self.is_batch = fn is not None and fn_mod.is_batch_transform(fn)
        self.inbox, self.outbox = inbox, outbox
        self.result = result
        self.stats = result.stages["transform"]
        self.position_index = position_index
        self.collect = job.max_rejects > 0
        self.pool: TransformPool | None = None
        # None: not decided yet (``workers: auto`` decides on the first batch).
        self.workers: int | None = job.workers if isinstance(job.workers, int) else None
        if fn is None:
            self.workers = 0
        if self.workers:
            self._start_pool_or_inline(self.workers, "workers setting")
        result.workers = self.workers or 0

    async def run(self) -> None:
        """Transform every batch until ``END``; then put ``END`` on the outbox."""
        loop = asyncio.get_running_loop()
        while True:
            with self.stats.waiting():
                batch = await self.inbox.get()
            if batch is END:
                break
            position = self._position(batch)
            deferred = None
            if self.pool is not None:
                output = self._submit(loop, batch)
            elif self.workers == 0:
                output = loop.create_future()
                deferred = _Deferred(self, batch, output)
            else:
                output = loop.create_future()
                self._inline(batch, output)  # workers: auto decides on this batch
            item = Transformed(batch.seq, batch.rows_read, position, output, deferred)
            failed = output.done() and output.exception() is not None
            # Only the queue holds the batch from here: memory is bounded by the queues.
            del batch, output, deferred
            with self.stats.waiting():
                await self.outbox.put(item)
            del item
            if failed:
                # The loader raises it after committing the batches before this one.
                return
        await self.outbox.put(END)

    async def close(self) -> None:
        """Stop the pool without blocking the event loop; kill workers that do not exit."""
        pool, self.pool = self.pool, None
        if pool is None:
            return
        pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.shield(asyncio.to_thread(pool.join_workers))

    # --- inline ---------------------------------------------------------------------------

    def _inline(self, batch: Batch, output: asyncio.Future[TransformOutput]) -> None:
        if self.fn is None:
            output.set_result(TransformOutput(batch.columns, batch.rows, 0.0, []))
            return
        start = time.perf_counter()
        rejects: list[fn_mod.TransformReject] | None = [] if self.collect else None
        try:
            out_cols, out_rows = fn_mod.apply_transform(
                self.fn, self.is_batch, batch.columns, batch.rows, self.job.read_key, rejects
            )
        except PgferryError as exc:
            output.set_exception(exc)
            return
        elapsed = time.perf_counter() - start
        self.stats.busy_s += elapsed
        output.set_result(TransformOutput(out_cols, out_rows, 0.0, rejects or []))
        if self.workers is None:
            self._decide_pool(elapsed, batch, out_rows)

    def _decide_pool(self, elapsed: float, batch: Batch, out_rows: fn_mod.Rows) -> None:
        """``workers: auto``: a pool only if the transform costs more than moving batches."""
        pool = _pool_module()
        use, why = pool.measure_pool_benefit(
            elapsed, batch.columns, list(map(tuple, batch.rows)), out_rows
        )
        if use:
            self._start_pool_or_inline(pool.default_pool_size(), why)
        else:
            self.workers = 0
            log.info("job %s: transform inline (%s)", self.job.name, why)
        self.result.workers = self.workers or 0

    # --- pool -----------------------------------------------------------------------------

    def _start_pool_or_inline(self, n: int, why: str) -> None:
        pool = _pool_module()
        assert self.fn is not None
        reason = pool.can_start_pool() or pool.pool_unpicklable_reason(
            self.job.transform or self.fn
        )
        if reason:
            log.warning("job %s: running the transform inline: %s", self.job.name, reason)
            self.workers = 0
            return
        path = (
            self.job.transform
            if isinstance(self.job.transform, str)
            else fn_mod.import_path_of(self.fn)
        )
        assert path is not None
        self.pool = pool.start_pool(path, n, job=self.job.name)
        self.workers = n
        log.info("job %s: transform in a pool of %d processes (%s)", self.job.name, n, why)

    def _submit(
        self, loop: asyncio.AbstractEventLoop, batch: Batch
    ) -> asyncio.Future[TransformOutput]:
        rows = list(map(tuple, batch.rows))
        worker: Callable[..., TransformOutput] = _pool_module().run_in_worker
        future: asyncio.Future[TransformOutput] = loop.run_in_executor(
            self.pool, worker, batch.columns, rows, self.job.read_key, self.collect
        )
        return future

    def _position(self, batch: Batch) -> list[str] | None:
        if not self.position_index:
            return None
        last = batch.rows[-1]
        return position_text([last[i] for i in self.position_index])
