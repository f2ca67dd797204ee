"""The columnar lane: Arrow batches from the source, through an Arrow or Polars transform, into
the target as binary COPY.

* **extract**: ADBC's PostgreSQL driver reads the source query as Arrow record batches (it
  decodes binary COPY in C++) inside one ``REPEATABLE READ READ ONLY`` transaction, the exported
  snapshot of a parallel run when there is one. The driver blocks, so each batch is fetched in
  a thread; the next is not fetched until the queue has room (backpressure).
* **transform**: the user's function on each batch, in a thread (Arrow and Polars release the
  GIL), then encoded to binary COPY tuples by pgpq.
* **load**: :meth:`~pgferry.engine.load.Writer.write_copy`: the batch and its ledger entry in
  one transaction, in extraction order (upsert through the staging table, replace into the
  shadow, exactly as on the rows lane).

How each type travels is decided before any row moves (:mod:`pgferry.arrow`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import asyncpg
import pyarrow as pa

from pgferry import sql_arrow
from pgferry._dsn import mask_dsn
from pgferry.arrow import Kind, carried_as_text, require, transform_kind
from pgferry.engine import functions
from pgferry.engine.extract import set_snapshot_statement
from pgferry.engine.lanes import arrow_codec as codec
from pgferry.engine.lanes.base import LaneContext
from pgferry.engine.plan import SourcePlan, position_text
from pgferry.engine.progress import Progress
from pgferry.engine.sinks.base import Reject
from pgferry.engine.sinks.postgres import PostgresSink
from pgferry.engine.stages import END, run_stages
from pgferry.errors import (
    ConfigError,
    ConnectError,
    ExtractError,
    PgferryError,
    TransformError,
    TransientConnectError,
    TransientExtractError,
)
from pgferry.retry import TRANSIENT_SQLSTATES, is_transient
from pgferry.spec import Job

__all__ = ["run_columnar"]

log = logging.getLogger("pgferry")

_SETTING = "pgferry.arg"


@dataclass(frozen=True)
class _Read:
    """A source batch (extract → transform)."""

    seq: int
    batch: pa.RecordBatch
    position: list[str] | None


@dataclass(frozen=True)
class _Done:
    """A transformed batch (transform → load), or the error that stopped it, in order."""

    seq: int
    rows_read: int
    position: list[str] | None
    table: pa.Table | None
    rejects: list[Reject]
    error: PgferryError | None = None
    encoded: codec.Encoded | None = None  # encoded beside the transform once the target is known


class ArrowReader:
    """A blocking ADBC connection reading one query as Arrow batches in one snapshot.

    ADBC's low-level API, not its DB-API module: that one imports Polars and
    ``pyarrow.dataset`` on import (≈ 80 MiB of resident memory for nothing here).
    """

    def __init__(self, dsn: str, *, job: Job, snapshot: str | None) -> None:
        self.dsn = dsn
        self.job = job
        self.snapshot = snapshot
        self._handles: list[Any] = []  # database, connection, statements: closed in reverse
        self._conn: Any = None
        self._reader: pa.RecordBatchReader | None = None
        # A cancelled stage leaves its thread running: close() waits for it, never overlaps it.
        self._lock = threading.Lock()

    def open(self, query: str, args: Sequence[str]) -> None:
        """Connect, start the transaction, set the parameters and start the query."""
        with self._lock:
            self._open(query, args)

    def _open(self, query: str, args: Sequence[str]) -> None:
        import adbc_driver_manager
        import adbc_driver_postgresql

        try:
            database = adbc_driver_postgresql.connect(self.dsn)
            self._handles.append(database)
            self._conn = adbc_driver_manager.AdbcConnection(database)
            self._handles.append(self._conn)
        except Exception as exc:
            cls = TransientConnectError if _transient(exc) else ConnectError
            raise cls(
                f"cannot open an Arrow reader on the source {mask_dsn(self.dsn)}: {exc}",
                job=self.job.name,
            ) from exc
        label = f"pgferry:{self.job.name}:arrow-reader"[:63]
        self._run("SELECT set_config('application_name', $1, false)", label)
        if self.job.statement_timeout is not None:
            ms = str(int(self.job.statement_timeout * 1000))
            self._run("SELECT set_config('statement_timeout', $1, false)", ms)
        self._run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if self.snapshot is not None:
            self._run(set_snapshot_statement(self.snapshot))
        for n, value in enumerate(args, 1):
            self._run("SELECT set_config($1, $2, true)", f"{_SETTING}{n}", value)
        statement = self._statement()
        # ``batch_bytes`` (default 1 MiB ≈ 7,500 rows of the standard workload): batches are
        # then cut to ``batch_size`` rows when the job sets it; memory is bounded by the queues.
        hint = str(self.job.batch_bytes)
        statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": hint})
        statement.set_sql_query(query)
        stream, _ = statement.execute_query()
        self._reader = pa.RecordBatchReader.from_stream(stream)

    def _statement(self) -> Any:
        import adbc_driver_manager

        statement = adbc_driver_manager.AdbcStatement(self._conn)
        self._handles.append(statement)
        return statement

    def _run(self, text: str, *params: str) -> None:
        """One statement; its parameters bound (text), its result read and dropped."""
        statement = self._statement()
        statement.set_sql_query(text)
        if params:
            names = [f"p{n}" for n in range(len(params))]
            statement.bind(pa.record_batch([pa.array([p]) for p in params], names=names))
            stream, _ = statement.execute_query()
            pa.RecordBatchReader.from_stream(stream).read_all()
        else:
            statement.execute_update()
        statement.close()
        self._handles.remove(statement)

    def next(self) -> pa.RecordBatch | None:
        """The next batch, or ``None`` at the end (then the transaction is committed)."""
        with self._lock:
            if self._reader is None:
                return None
            try:
                return self._reader.read_next_batch()
            except StopIteration:
                self._reader.close()
                self._reader = None
                self._run("COMMIT")
                return None

    def close(self) -> None:
        """Close everything (a transaction still open is rolled back by the server)."""
        with self._lock:
            things = [self._reader, *reversed(self._handles)]
            for thing in things:
                if thing is not None:
                    try:
                        thing.close()
                    except Exception:
                        log.debug("closing the Arrow reader failed", exc_info=True)
            self._handles = []
            self._reader = self._conn = None


def _transient(exc: BaseException) -> bool:
    """The retry policy's classification, for ADBC's errors (which carry the SQLSTATE)."""
    import adbc_driver_manager

    if not isinstance(exc, adbc_driver_manager.Error):
        return is_transient(exc)
    state = getattr(exc, "sqlstate", None) or ""
    if state:
        return state.startswith("08") or state in TRANSIENT_SQLSTATES
    # No SQLSTATE: libpq lost the connection (the server went away, the network broke).
    return getattr(exc, "status_code", None) == adbc_driver_manager.AdbcStatusCode.IO


async def _reader_query(
    src: asyncpg.Connection, plan: SourcePlan, kind: Kind
) -> tuple[str, list[str]]:
    """The query the Arrow reader runs (columns not carried natively as text) and its
    parameters as text, passed as transaction settings (ADBC streams only unbound queries)."""
    text_cols = [(c.name, carried_as_text(c.type, kind)) for c in plan.columns]
    query = sql_arrow.select_for_arrow(plan.query, text_cols, plan.position_columns)
    if not plan.args:
        return query, []
    stmt = await src.prepare(plan.query)
    types = [
        await src.fetchval("SELECT format_type($1::oid, NULL)", t.oid)
        for t in stmt.get_parameters()
    ]
    args = [v if isinstance(v, str) else position_text([v])[0] for v in plan.args]
    return sql_arrow.params_as_settings(query, types, _SETTING), args


async def run_columnar(ctx: LaneContext) -> None:
    """Read Arrow batches → the user's Arrow/Polars function → binary COPY, in order.

    A parallel run's pipeline passes ``ctx.snapshot`` (read in it) and ``ctx.prepared`` (the
    target's columns, prepared by the coordinator).
    """
    job, src, plan, result, on_progress = ctx.job, ctx.src, ctx.plan, ctx.result, ctx.on_progress
    snapshot, prepared, on_snapshot = ctx.snapshot, ctx.prepared, ctx.on_snapshot
    writer = ctx.sink
    if not isinstance(writer, PostgresSink):
        raise ConfigError(
            "an Arrow or Polars transform writes binary COPY: its target must be PostgreSQL",
            job=job.name,
        )
    fn = functions.load_transform(job.transform) if job.transform is not None else None
    kind = transform_kind(fn) if fn is not None else None
    assert fn is not None and kind is not None
    require(kind, job=job.name)
    result.path = "columnar"
    result.workers = 0
    query, args = await _reader_query(src, plan, kind)
    dsn = job.source.dsn
    assert dsn is not None
    raw: asyncio.Queue[Any] = asyncio.Queue(maxsize=job.queue_depth)
    done: asyncio.Queue[Any] = asyncio.Queue(maxsize=job.queue_depth)
    es, ts, ls = (result.stages[s] for s in ("extract", "transform", "load"))
    collect = job.max_rejects > 0
    position_index = plan.position_index
    loop = asyncio.get_running_loop()
    # One thread for the driver, one for the transform and the encoder: every batch's memory
    # is allocated by the same two threads (rotating pool threads each grew an allocator arena
    # of their own: 14 to 27 MiB more at peak at 1M rows), and the ADBC connection sees one thread.
    read_thread = ThreadPoolExecutor(1, thread_name_prefix="pgferry-arrow-read")
    work_thread = ThreadPoolExecutor(1, thread_name_prefix="pgferry-arrow-transform")
    encoders: list[codec.Encoder] = []  # set once the target is prepared
    # Unless the job sets batch_size, a batch is what the driver reads at once (batch_bytes).
    rows_per_batch = job.batch_size if "batch_size" in job.model_fields_set else None

    async def extract_stage() -> None:
        reader = ArrowReader(dsn, job=job, snapshot=snapshot)
        seq = 0
        try:
            with es.busy():
                await loop.run_in_executor(read_thread, reader.open, query, args)
            if on_snapshot is not None and snapshot is not None:
                on_snapshot()
            while True:
                with es.busy():
                    batch = await loop.run_in_executor(read_thread, reader.next)
                if batch is None:
                    break
                for offset in range(0, batch.num_rows, rows_per_batch or batch.num_rows):
                    part = batch.slice(offset, rows_per_batch or batch.num_rows)
                    codec.check_infinities(part, job=job.name, seq=seq)
                    item = _Read(seq, part, codec.position_of(part, position_index))
                    del part
                    with es.waiting():
                        await raw.put(item)
                    del item
                    seq += 1
                del batch
        except PgferryError:
            raise
        except Exception as exc:
            cls = TransientExtractError if _transient(exc) else ExtractError
            raise cls(
                f"reading the source as Arrow failed: {type(exc).__name__}: {exc}",
                job=job.name,
                batch=seq,
            ) from exc
        finally:
            await asyncio.shield(loop.run_in_executor(read_thread, reader.close))
        with es.waiting():
            await raw.put(END)

    def transform_one(item: _Read) -> _Done:
        batch = codec.plain(item.batch)
        rejects: list[Reject] = []
        try:
            if collect:
                table = _isolating(fn, kind, batch, rejects)
            else:
                table = codec.call_transform(fn, kind, batch)
            # Once the target is prepared, encoding happens here too, off the loader's path.
            encoded = (
                encoders[0].encode(table, item.seq) if encoders and table.num_columns else None
            )
        except PgferryError as exc:
            return _Done(item.seq, batch.num_rows, item.position, None, [], exc)
        return _Done(item.seq, batch.num_rows, item.position, table, rejects, encoded=encoded)

    async def transform_stage() -> None:
        while True:
            with ts.waiting():
                item = await raw.get()
            if item is END:
                break
            with ts.busy():
                out = await loop.run_in_executor(work_thread, transform_one, item)
            del item
            with ts.waiting():
                await done.put(out)
            if out.error is not None:
                return
            del out
        await done.put(END)

    async def load_stage() -> None:
        encoder: codec.Encoder | None = None
        while True:
            with ls.waiting():
                item = await done.get()
            if item is END:
                break
            if item.error is not None:
                raise item.error.with_context(job=job.name, batch=item.seq)
            table = item.table
            assert table is not None
            if encoder is None and table.num_columns:
                encoder = await _prepare(job, writer, plan, table, prepared)
                encoders.append(encoder)
            with ls.busy():
                if encoder is not None and writer.ready:
                    encoded = (
                        item.encoded
                        or await loop.run_in_executor(work_thread, encoder.encode, table, item.seq)
                        if table.num_columns
                        else codec.NOTHING  # every row rejected: the ledger still moves on
                    )
                    await writer.write_copy(
                        item.seq,
                        encoded,
                        rows_read=item.rows_read,
                        position=item.position,
                        rejects=item.rejects,
                    )
                    del encoded
                else:
                    result.rows_read += item.rows_read
                    result.rows_rejected += len(item.rejects)
            del item, table
            if on_progress is not None:
                on_progress(
                    Progress(result.rows_read, result.rows_written, 0, plan.estimate, "columnar")
                )

    try:
        await run_stages(extract_stage(), transform_stage(), load_stage())
    finally:
        read_thread.shutdown(wait=False)
        work_thread.shutdown(wait=False)


async def _prepare(
    job: Job,
    writer: PostgresSink,
    plan: SourcePlan,
    table: pa.Table,
    prepared: Sequence[str] | None,
) -> codec.Encoder:
    """Prepare the target from the first transformed batch; build the encoder."""
    if prepared is not None:
        await writer.attach(prepared)
    elif not writer.ready:
        incoming = codec.output_columns(table, plan.columns, dict(job.target.columns))
        typed = {c.name for c in plan.columns} | set(job.target.columns)
        # Text goes into a column of any type on this lane: the server casts it, and refuses
        # a value that is not valid text for the column's type (so it is not a type clash).
        typed -= {c.name for c in incoming if c.type in ("text", "character varying")}
        await writer.prepare(incoming, typed & set(table.column_names))
    encoder = codec.Encoder(writer.columns, writer.types, table.schema, job.name)
    await writer.prepare_copy(encoder.carried)
    if encoder.carried:
        log.info(
            "job %s: columns %s are written as text and cast by the server",
            job.name,
            ", ".join(encoder.carried),
        )
    return encoder


def _isolating(
    fn: Callable[..., Any], kind: Kind, batch: pa.RecordBatch, rejects: list[Reject]
) -> pa.Table:
    """Call the transform; when it raises, call it on halves to set the bad rows aside."""
    try:
        return codec.call_transform(fn, kind, batch)
    except TransformError as exc:
        if batch.num_rows <= 1:
            cause = exc.__cause__ or exc
            for row in batch.to_pylist() if batch.num_rows else []:
                rejects.append(("transform", type(cause).__name__, str(cause), None, row))
            return pa.table({})
        mid = batch.num_rows // 2
        halves = [
            _isolating(fn, kind, batch.slice(0, mid), rejects),
            _isolating(fn, kind, batch.slice(mid), rejects),
        ]
        kept = [h for h in halves if h.num_columns]
        if not kept:
            return pa.table({})
        return pa.concat_tables(kept, promote_options="default") if len(kept) > 1 else kept[0]
