"""The ``rows`` path, and the stage machinery both of a run's paths share.

* ``rows`` (here): a server-side cursor reads batches → bounded queue → transform (inline or
  in a process pool) → bounded queue of results in extraction order → :class:`Writer`, one
  transaction per batch with its ledger entry.
* ``pipe`` (no transform, :mod:`pgferry.engine.pipe`): ``COPY (…) TO STDOUT (FORMAT binary)``
  streamed into ``COPY … FROM STDIN (FORMAT binary)``; no row is decoded in Python.

Every stage runs in one :class:`asyncio.TaskGroup`: an exception in any stage, a task
cancellation or Ctrl-C cancels the others and rolls back the batch in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from pgferry import schema
from pgferry.engine import pool as tpool
from pgferry.engine import transform as tf
from pgferry.engine import values
from pgferry.engine.extract import END, extract_batches
from pgferry.engine.load import Reject, Writer
from pgferry.engine.load_errors import explain_encode_failure
from pgferry.engine.plan import SourcePlan, position_text
from pgferry.errors import PgferryError, SchemaError, TransformError
from pgferry.result import RunResult
from pgferry.spec import Job

if TYPE_CHECKING:  # the pool's modules load when a pool starts (import time of pgferry)
    from concurrent.futures import ProcessPoolExecutor

__all__ = ["Progress", "ProgressCallback", "run_rows", "run_stages"]

log = logging.getLogger("pgferry")


@dataclass(frozen=True)
class Progress:
    """A progress report, sent after every committed batch (and every chunk on the pipe).

    Attributes:
        rows_read: Source rows read so far (``rows`` path).
        rows_written: Rows committed to the target so far (``rows`` path).
        bytes_moved: COPY bytes streamed so far (``pipe`` path).
        total_rows: The planner's estimate of the source's rows, when reading a table.
        path: ``rows`` or ``pipe``.
    """

    rows_read: int
    rows_written: int
    bytes_moved: int
    total_rows: int | None
    path: str


ProgressCallback = Callable[[Progress], None]


async def run_stages(*coros: Coroutine[Any, Any, Any]) -> None:
    """Run stages together; the first real error wins and cancels the rest."""
    try:
        async with asyncio.TaskGroup() as group:
            for coro in coros:
                group.create_task(coro)
    except BaseExceptionGroup as eg:
        errors = [e for e in _leaves(eg) if not isinstance(e, asyncio.CancelledError)]
        if errors:
            raise errors[0] from None
        raise


def _leaves(eg: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in eg.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def run_rows(
    job: Job,
    src: asyncpg.Connection,
    writer: Writer,
    plan: SourcePlan,
    result: RunResult,
    on_progress: ProgressCallback | None,
    *,
    snapshot: str | None = None,
    prepared: Sequence[str] | None = None,
    on_snapshot: Callable[[], None] | None = None,
) -> None:
    """Cursor → transform → writer, with bounded queues and in-order commits.

    Without a transform (the fallback from the pipe, to isolate bad rows), rows pass through
    as they were decoded.

    Args:
        snapshot: Read in this exported snapshot (a pipeline of a parallel run).
        prepared: The target was prepared by the coordinator of a parallel run: the columns
            to write, in order.
        on_snapshot: Called once the reader's transaction has imported ``snapshot``.
    """
    _check_row_path_types(job, plan)
    await values.prepare_source(src)
    fn = tf.load_transform(job.transform) if job.transform is not None else None
    is_batch = fn is not None and tf.is_batch_transform(fn)
    names = tuple(c.name for c in plan.columns)
    key = job.read_key
    collect = job.max_rejects > 0
    position_index = plan.position_index
    raw: asyncio.Queue[Any] = asyncio.Queue(maxsize=job.queue_depth)
    pool: ProcessPoolExecutor | None = None
    workers = job.workers if isinstance(job.workers, int) else None  # None = decide
    if fn is None:
        workers = 0
    done: asyncio.Queue[Any] = asyncio.Queue(
        maxsize=max(job.queue_depth, (workers or tpool.default_pool_size()) + 1)
    )
    ts, ld = result.stages["transform"], result.stages["load"]
    loop = asyncio.get_running_loop()

    def start_pool_or_inline(n: int, why: str) -> None:
        nonlocal pool, workers
        assert fn is not None
        reason = tpool.can_start_pool() or tpool.pool_unpicklable_reason(job.transform or fn)
        if reason:
            log.warning("job %s: running the transform inline: %s", job.name, reason)
            workers = 0
            return
        path = job.transform if isinstance(job.transform, str) else tf.import_path_of(fn)
        assert path is not None
        pool = tpool.start_pool(path, n, job=job.name)
        workers = n
        log.info("job %s: transform in a pool of %d processes (%s)", job.name, n, why)

    if workers:
        start_pool_or_inline(workers, "workers setting")
    result.workers = workers or 0

    async def transform_stage() -> None:
        nonlocal workers
        while True:
            with ts.waiting():
                batch = await raw.get()
            if batch is END:
                break
            last = batch.rows[-1]
            position = position_text([last[i] for i in position_index]) if position_index else None
            fut: asyncio.Future[Any] = loop.create_future()
            if fn is None:
                fut.set_result((batch.columns, batch.rows, 0.0, []))
            elif pool is None:
                start = time.perf_counter()
                rejects: list[tf.TransformReject] | None = [] if collect else None
                try:
                    out_cols, out_rows = tf.apply_transform(
                        fn, is_batch, batch.columns, batch.rows, key, rejects
                    )
                except PgferryError as exc:
                    # Handed to the loader like a pool result, so that the batches before
                    # this one are committed first and the failure surfaces in order.
                    fut.set_exception(exc)
                    with ts.waiting():
                        await done.put((batch.seq, batch.rows_read, position, fut))
                    return
                elapsed = time.perf_counter() - start
                ts.busy_s += elapsed
                fut.set_result((out_cols, out_rows, 0.0, rejects or []))
                if workers is None:
                    use, why = tpool.measure_pool_benefit(
                        elapsed, batch.columns, list(map(tuple, batch.rows)), out_rows
                    )
                    if use:
                        start_pool_or_inline(tpool.default_pool_size(), why)
                    else:
                        workers = 0
                        log.info("job %s: transform inline (%s)", job.name, why)
                    result.workers = workers or 0
                del out_cols, out_rows, rejects
            else:
                rows = list(map(tuple, batch.rows))
                fut = asyncio.ensure_future(
                    loop.run_in_executor(
                        pool, tpool.run_in_worker, batch.columns, rows, key, collect
                    )
                )
                del rows
            item = (batch.seq, batch.rows_read, position, fut)
            # Only the queue holds the batch from here: memory is bounded by the queues.
            del batch, fut
            with ts.waiting():
                await done.put(item)
            del item
        await done.put(END)

    async def load_stage() -> None:
        canonical: tuple[str, ...] | None = None
        while True:
            with ld.waiting():
                item = await done.get()
                if item is END:
                    break
                seq, rows_read, position, fut = item
                try:
                    out_cols, out_rows, worker_cpu, t_rejects = await fut
                except BrokenExecutor as exc:  # BrokenProcessPool
                    raise TransformError(
                        "a transform worker process died (killed, or out of memory)",
                        job=job.name,
                        batch=seq,
                    ) from exc
                except PgferryError as exc:
                    raise exc.with_context(job=job.name, batch=seq) from exc.__cause__
            ts.busy_s += worker_cpu
            rejects: list[Reject] = [
                ("transform", cls, message, None, row) for cls, message, row in t_rejects
            ]
            if out_cols is not None and not writer.ready:
                if prepared is not None:
                    await writer.attach(prepared)
                else:
                    incoming = schema.output_columns(
                        out_cols, out_rows, plan.columns, job.target.columns
                    )
                    typed = {c.name for c in plan.columns} | set(job.target.columns)
                    await writer.prepare(incoming, typed & set(out_cols))
                await writer.prepare_rows()
                canonical = writer.accepts
            if out_cols is not None and out_cols != canonical:
                assert canonical is not None
                out_rows = _reorder(out_cols, out_rows, canonical, job.name, seq)
            if writer.ready:
                with ld.busy():
                    try:
                        await writer.write(
                            seq, out_rows, rows_read=rows_read, position=position, rejects=rejects
                        )
                    except (TypeError, ValueError, OverflowError, AttributeError) as exc:
                        raise await explain_encode_failure(
                            exc,
                            writer.conn,
                            job=job.name,
                            table=writer.table,
                            copy_into=writer.copy_into,
                            batch=seq,
                            columns=writer.columns,
                            rows=out_rows,
                        ) from exc
            else:
                result.rows_read += rows_read
                result.rows_rejected += len(rejects)
            # The batch is committed: let it go before waiting for the next one.
            del item, fut, out_rows, rejects, t_rejects
            if on_progress is not None:
                on_progress(
                    Progress(result.rows_read, result.rows_written, 0, plan.estimate, "rows")
                )

    async def extract_stage() -> None:
        await extract_batches(
            src,
            plan.query,
            plan.args,
            names,
            batch_size=job.batch_size,
            queue=raw,
            stats=result.stages["extract"],
            job=job.name,
            snapshot=snapshot,
            on_snapshot=on_snapshot,
        )

    try:
        await run_stages(extract_stage(), transform_stage(), load_stage())
    finally:
        _discard_pending(done)
        if pool is not None:
            await _shutdown_pool(pool)


# Types asyncpg can decode but not write in binary, which copy_records_to_table requires.
_NO_BINARY_ENCODER = {"money", "tsvector", "tsquery", "xml"}


def _check_row_path_types(job: Job, plan: SourcePlan) -> None:
    for col in plan.columns:
        base = col.type.removesuffix("[]")
        if base in _NO_BINARY_ENCODER:
            raise SchemaError(
                f"column {col.name!r} has type {col.type}, which decoded rows cannot carry "
                f"back to PostgreSQL; cast it in a source query (e.g. {col.name}::text or, "
                "for money, ::numeric) or run without a transform to use the binary pipe",
                job=job.name,
                column=col.name,
            )


def _reorder(
    cols: tuple[str, ...],
    rows: list[tuple[Any, ...]],
    canonical: tuple[str, ...],
    job: str,
    seq: int,
) -> list[tuple[Any, ...]]:
    if set(cols) != set(canonical):
        extra = sorted(set(cols) - set(canonical))
        missing = sorted(set(canonical) - set(cols))
        raise TransformError(
            f"transform output changed columns between batches: extra {extra}, missing {missing}",
            job=job,
            batch=seq,
            column=(extra or missing)[0],
        )
    index = [cols.index(c) for c in canonical]
    return [tuple(row[i] for i in index) for row in rows]


def _discard_pending(queue: asyncio.Queue[Any]) -> None:
    """Drop results a failed run will never load, marking their errors as seen."""
    while not queue.empty():
        item = queue.get_nowait()
        if item is END:
            continue
        fut = item[3]
        if fut.done():
            if not fut.cancelled():
                fut.exception()
        else:
            fut.cancel()


async def _shutdown_pool(pool: ProcessPoolExecutor) -> None:
    """Stop the pool without blocking the event loop; kill workers if they do not exit."""
    # Taken before shutdown(), which forgets them.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)

    def join() -> None:
        for proc in processes:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)

    await asyncio.shield(asyncio.to_thread(join))
