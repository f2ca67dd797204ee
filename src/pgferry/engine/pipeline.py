"""Wiring: plan, run the stages concurrently with backpressure, and clean up on any exit.

Two paths:

* ``pipe`` (no transform): ``COPY (…) TO STDOUT (FORMAT binary)`` streamed into
  ``COPY … FROM STDIN (FORMAT binary)``; no row is decoded in Python.
* ``rows``: a server-side cursor reads batches → bounded queue → transform (inline or in a
  process pool) → bounded queue of results in extraction order → ``copy_records_to_table``,
  one transaction per batch.

Every stage runs in one :class:`asyncio.TaskGroup`: an exception in any stage, a task
cancellation or Ctrl-C cancels the others, rolls back the batch in flight and closes every
connection.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import asyncpg

from pgferry import schema, sql
from pgferry.connection import close_quietly, connect
from pgferry.engine import transform as tf
from pgferry.engine.extract import END, extract_batches, pipe_out
from pgferry.engine.load import (
    ReplacePlan,
    copy_batch,
    copy_stream,
    explain_encode_failure,
    load_failure,
)
from pgferry.errors import PgferryError, SchemaError, TransformError
from pgferry.result import RunResult
from pgferry.schema import Column
from pgferry.spec import Job
from pgferry.sql import TableName

__all__ = ["Progress", "run_async"]

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


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


async def _run_stages(*coros: Coroutine[Any, Any, Any]) -> None:
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


class _Target:
    """Prepares the table rows are copied into: create, check, or shadow for ``replace``."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.table = job.target.table
        self.copy_into: TableName = self.table
        self.replace: ReplacePlan | None = None
        self.columns: tuple[str, ...] = ()
        self.casts: dict[str, str | None] = {}
        self.size_before = 0
        self.ready = False

    async def prepare(
        self, conn: asyncpg.Connection, incoming: Sequence[Column], typed: set[str]
    ) -> None:
        existing = await schema.describe_table(conn, self.table)
        if existing is not None:
            self.casts = await schema.match_target(
                conn, self.table, incoming, existing, typed=typed
            )
        if self.job.target.mode == "replace":
            self.replace = ReplacePlan(self.table, existed=existing is not None)
            self.copy_into = self.replace.shadow
            if existing is not None:
                await self.replace.create_shadow_like_target(conn)
            else:
                await self.replace.drop_shadow(conn)
                await schema.create_table(conn, self.copy_into, incoming)
        elif existing is None:
            try:
                await schema.create_table(conn, self.table, incoming)
                log.info("created target table %s", self.table)
            except asyncpg.DuplicateTableError:
                # Another run created it meanwhile: check against what is there now.
                await self.prepare(conn, incoming, typed)
                return
        self.columns = tuple(c.name for c in incoming)
        self.size_before = await schema.table_size(conn, self.copy_into)
        self.ready = True

    async def prepare_empty(self, conn: asyncpg.Connection) -> None:
        """No row arrived and the output columns are unknown: still honour ``replace``."""
        existing = await schema.describe_table(conn, self.table)
        if self.job.target.mode == "replace" and existing is not None:
            await self.prepare(conn, existing, set())
        elif existing is None:
            log.warning(
                "job %s: the transform produced no rows, so the columns of %s are unknown "
                "and it was not created",
                self.job.name,
                self.table,
            )


async def run_async(job: Job, *, on_progress: ProgressCallback | None = None) -> RunResult:
    """Run one job to completion.

    Args:
        job: The job.
        on_progress: Called with a :class:`Progress` after every committed batch.

    Returns:
        The :class:`RunResult` of a successful run.

    Raises:
        PgferryError: The run failed; ``exc.result`` holds the failed :class:`RunResult` and
            nothing already committed was lost.
    """
    result = RunResult(job=job.name, mode=job.target.mode, started_at=_utcnow())
    t0 = time.perf_counter()
    src: asyncpg.Connection | None = None
    tgt: asyncpg.Connection | None = None
    target = _Target(job)
    try:
        row_path = job.transform is not None
        src = await connect(
            job.source.dsn,
            role="source",
            job=job.name,
            timeout=job.connect_timeout,
            statement_timeout=job.statement_timeout,
            codecs=row_path,
        )
        tgt = await connect(
            job.target.dsn,
            role="target",
            job=job.name,
            timeout=job.connect_timeout,
            statement_timeout=job.statement_timeout,
            codecs=row_path,
        )
        query, source_columns, estimate = await _plan_source(src, job)
        if row_path:
            await _run_rows(job, src, tgt, query, source_columns, estimate, target, result,
                            on_progress)  # fmt: skip
        else:
            await _run_pipe(job, src, tgt, query, source_columns, target, result, on_progress)
        if target.ready:
            if target.replace is not None:
                await target.replace.swap(
                    tgt, lock_timeout=job.lock_timeout, retries=job.swap_retries
                )
                result.bytes_written = await schema.table_size(tgt, target.table)
            else:
                grown = await schema.table_size(tgt, target.table) - target.size_before
                result.bytes_written = max(0, grown)
        result.status = "success"
        return result
    except BaseException as exc:
        result.status = "failed"
        result.error = str(exc) or type(exc).__name__
        if target.replace is not None and tgt is not None and not tgt.is_closed():
            await _drop_shadow_quietly(tgt, target.replace)
        if isinstance(exc, PgferryError):
            exc.with_context(job=job.name)
            exc.result = result  # type: ignore[attr-defined]
        raise
    finally:
        result.duration_s = time.perf_counter() - t0
        result.finished_at = _utcnow()
        await close_quietly(src)
        await close_quietly(tgt)


async def _drop_shadow_quietly(conn: asyncpg.Connection, plan: ReplacePlan) -> None:
    try:
        await asyncio.shield(asyncio.wait_for(plan.drop_shadow(conn), 10))
    except BaseException:  # cleanup must never hide the real error
        log.warning("could not drop the shadow table %s", plan.shadow)


async def _plan_source(
    conn: asyncpg.Connection, job: Job
) -> tuple[str, list[Column], int | None]:
    """The query to read, its columns with exact types, and a row estimate if known."""
    src = job.source
    if src.table is not None:
        columns = await schema.describe_table(conn, src.table)
        if columns is None:
            raise SchemaError(f"source table {src.table} does not exist", job=job.name)
        query = sql.select_from_table(src.table, [c.name for c in columns])
        estimate = await schema.estimate_rows(conn, src.table)
    else:
        assert src.query is not None
        try:
            columns = await schema.describe_query(conn, src.query)
        except asyncpg.PostgresError as exc:
            raise SchemaError(
                f"the source query is not valid: {type(exc).__name__}: {exc}", job=job.name
            ) from exc
        query, estimate = src.query, None
    schema.check_unique_names(columns, "the source")
    return query, columns, estimate


async def _run_pipe(
    job: Job,
    src: asyncpg.Connection,
    tgt: asyncpg.Connection,
    query: str,
    columns: list[Column],
    target: _Target,
    result: RunResult,
    on_progress: ProgressCallback | None,
) -> None:
    result.path = "pipe"
    await target.prepare(tgt, columns, {c.name for c in columns})
    select = sql.select_with_casts(query, [(c.name, target.casts.get(c.name)) for c in columns])
    chunks: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(8, job.queue_depth * 4))
    ex, ld = result.stages["extract"], result.stages["load"]
    moved = 0

    async def sink(data: bytes) -> None:
        nonlocal moved
        moved += len(data)
        with ex.waiting():
            await chunks.put(data)
        if on_progress is not None:
            on_progress(Progress(0, 0, moved, None, "pipe"))

    async def producer() -> None:
        start = time.perf_counter()
        await pipe_out(src, select, sink=sink, job=job.name)
        await chunks.put(END)
        ex.busy_s = time.perf_counter() - start - ex.wait_s

    async def source() -> Any:
        while True:
            with ld.waiting():
                chunk = await chunks.get()
            if chunk is END:
                return
            yield chunk

    async def consumer() -> None:
        start = time.perf_counter()
        try:
            rows = await copy_stream(tgt, target.copy_into, target.columns, source())
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise load_failure(
                exc, job=job.name, table=target.table, batch=0, columns=target.columns
            ) from exc
        ld.busy_s = time.perf_counter() - start - ld.wait_s
        result.rows_read = result.rows_written = rows
        result.batches = 1

    await _run_stages(producer(), consumer())


async def _run_rows(
    job: Job,
    src: asyncpg.Connection,
    tgt: asyncpg.Connection,
    query: str,
    source_columns: list[Column],
    estimate: int | None,
    target: _Target,
    result: RunResult,
    on_progress: ProgressCallback | None,
) -> None:
    assert job.transform is not None
    fn = tf.load_transform(job.transform)
    is_batch = tf.is_batch_transform(fn)
    names = tuple(c.name for c in source_columns)
    key = job.source.key
    raw: asyncio.Queue[Any] = asyncio.Queue(maxsize=job.queue_depth)
    pool: ProcessPoolExecutor | None = None
    workers = job.workers if isinstance(job.workers, int) else None  # None = decide
    done: asyncio.Queue[Any] = asyncio.Queue(
        maxsize=max(job.queue_depth, (workers or tf.default_pool_size()) + 1)
    )
    ts, ld = result.stages["transform"], result.stages["load"]
    loop = asyncio.get_running_loop()

    def start_pool_or_inline(n: int, why: str) -> None:
        nonlocal pool, workers
        reason = tf.can_start_pool() or tf.pool_unpicklable_reason(job.transform or fn)
        if reason:
            log.warning("job %s: running the transform inline: %s", job.name, reason)
            workers = 0
            return
        path = job.transform if isinstance(job.transform, str) else tf.import_path_of(fn)
        assert path is not None
        pool = tf.start_pool(path, n)
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
            fut: asyncio.Future[Any] = loop.create_future()
            if pool is None:
                start = time.perf_counter()
                try:
                    out_cols, out_rows = tf.apply_transform(
                        fn, is_batch, batch.columns, batch.rows, key
                    )
                except PgferryError as exc:
                    # Handed to the loader like a pool result, so that the batches before
                    # this one are committed first and the failure surfaces in order.
                    fut.set_exception(exc)
                    with ts.waiting():
                        await done.put((batch.seq, batch.rows_read, fut))
                    return
                elapsed = time.perf_counter() - start
                ts.busy_s += elapsed
                fut.set_result((out_cols, out_rows, 0.0))
                if workers is None:
                    use, why = tf.measure_pool_benefit(
                        elapsed, batch.columns, [tuple(r) for r in batch.rows], out_rows
                    )
                    if use:
                        start_pool_or_inline(tf.default_pool_size(), why)
                    else:
                        workers = 0
                        log.info("job %s: transform inline (%s)", job.name, why)
                    result.workers = workers or 0
            else:
                rows = [tuple(r) for r in batch.rows]
                inner = loop.run_in_executor(pool, tf.run_in_worker, batch.columns, rows, key)
                fut = asyncio.ensure_future(inner)
            with ts.waiting():
                await done.put((batch.seq, batch.rows_read, fut))
        await done.put(END)

    async def load_stage() -> None:
        canonical: tuple[str, ...] | None = None
        while True:
            with ld.waiting():
                item = await done.get()
                if item is END:
                    break
                seq, rows_read, fut = item
                try:
                    out_cols, out_rows, worker_cpu = await fut
                except BrokenProcessPool as exc:
                    raise TransformError(
                        "a transform worker process died (killed, or out of memory)",
                        job=job.name,
                        batch=seq,
                    ) from exc
                except PgferryError as exc:
                    raise exc.with_context(job=job.name, batch=seq) from exc.__cause__
            ts.busy_s += worker_cpu
            result.rows_read += rows_read
            if out_cols is not None:
                if not target.ready:
                    incoming = schema.output_columns(
                        out_cols, out_rows, source_columns, job.target.columns
                    )
                    typed = {c.name for c in source_columns} | set(job.target.columns)
                    await target.prepare(tgt, incoming, typed & set(out_cols))
                    canonical = target.columns
                assert canonical is not None
                if out_cols != canonical:
                    out_rows = _reorder(out_cols, out_rows, canonical, job.name, seq)
                with ld.busy():
                    try:
                        await copy_batch(tgt, target.copy_into, canonical, out_rows)
                    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                        raise load_failure(
                            exc, job=job.name, table=target.table, batch=seq, columns=canonical
                        ) from exc
                    except (TypeError, ValueError, OverflowError, AttributeError) as exc:
                        raise await explain_encode_failure(
                            exc, tgt, job=job.name, table=target.table,
                            copy_into=target.copy_into, batch=seq, columns=canonical,
                            rows=out_rows,
                        ) from exc  # fmt: skip
                result.rows_written += len(out_rows)
                result.batches += 1
            if on_progress is not None:
                on_progress(
                    Progress(result.rows_read, result.rows_written, 0, estimate, "rows")
                )
        if not target.ready:
            await target.prepare_empty(tgt)

    async def extract_stage() -> None:
        await extract_batches(
            src,
            query,
            (),
            names,
            batch_size=job.batch_size,
            queue=raw,
            stats=result.stages["extract"],
            job=job.name,
        )

    try:
        await _run_stages(extract_stage(), transform_stage(), load_stage())
    finally:
        _discard_pending(done)
        if pool is not None:
            await _shutdown_pool(pool)


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
            f"transform output changed columns between batches: extra {extra}, missing "
            f"{missing}",
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
        fut = item[2]
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

