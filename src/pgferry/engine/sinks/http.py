"""The HTTP sink: batches of rows as requests to an endpoint, the ledger in ``state.dsn``.

It has the PostgreSQL writer's interface (``prepare``/``write``/``finish``/``abort``), so the rows
lane feeds it as it feeds the writer: reading, transforming and sending overlap, and memory is
bounded by the queues plus ``queue_depth`` batches in flight here.

Exactly-once effect through idempotency keys:

* A batch (``batch_size`` rows from the resume point, in key order) is cut into requests of
  ``rows_per_request`` rows, so a rerun after a crash cuts the same requests.
* A request's key is derived from (job, partition, first and last key of its rows): a retry, or a
  rerun, sends the same rows under the same key. A request the server refused is split in halves,
  each under the key of its own first and last rows, until the refused rows are isolated; a row
  the server accepted was thus accepted under one key only.
* Requests of several batches are in flight at once and complete in any order, but a batch's
  ledger row (with its rejects) is committed only when every request of it and of every batch
  before it has succeeded.

That is at-least-once delivery, with an exactly-once effect for servers that honour the key.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import importlib
import json
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from pgferry import schema
from pgferry.engine.plan import SourcePlan, position_text
from pgferry.engine.sinks.base import Reject
from pgferry.engine.sinks.rejects import RejectBudget
from pgferry.errors import ConfigError, LoadError, PgferryError, SchemaError, TransientLoadError
from pgferry.httpjson import RowEncoder, dumps
from pgferry.httpsend import HttpRejected, Sender
from pgferry.httpspec import HttpTarget
from pgferry.result import RunResult
from pgferry.spec import Job
from pgferry.state import StateStore

__all__ = ["HttpSink", "idempotency_key", "load_request_hook"]

log = logging.getLogger("pgferry")

T = TypeVar("T")

_CONTENT_TYPES = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "row": "application/json",
}


def idempotency_key(job: str, partition: str, first: Sequence[str], last: Sequence[str]) -> str:
    """The key of a request: a hash of (job, partition, first and last row keys)."""
    text = json.dumps([job, partition, list(first), list(last)], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def load_request_hook(path: str) -> Any:
    """Import ``module:function`` for ``target.http.request``."""
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise ConfigError(
            f"cannot import target.http.request {path!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(obj):
        raise ConfigError(f"target.http.request {path!r} is not callable")
    return obj


async def _together(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run coroutines concurrently; the first error cancels the others and is raised as it is."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as eg:
        raise _first_error(eg) from None
    return [t.result() for t in tasks]


def _first_error(eg: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return eg.exceptions[0]


@dataclass
class _Pending:
    seq: int
    rows_read: int
    position: list[str] | None
    rejects: list[Reject]
    task: asyncio.Task[tuple[int, list[Reject], int]]


class HttpSink:
    """The target side of one attempt when the target is an HTTP endpoint.

    Args:
        job: The job (with ``target.http``).
        conn: A connection to the state database (``state.dsn``).
        store: The state store there.
        result: The run's result; counters are updated when a batch's ledger row commits.
        plan: The source plan (position kind).
    """

    def __init__(
        self,
        job: Job,
        conn: asyncpg.Connection,
        store: StateStore,
        result: RunResult,
        plan: SourcePlan,
    ) -> None:
        assert job.target.http is not None
        self.job = job
        self.http: HttpTarget = job.target.http
        self.conn = conn
        self.store = store
        self.result = result
        self.plan = plan
        self.partition = job.partition.name if job.partition else ""
        self.columns: tuple[str, ...] = ()
        self.ready = False
        self.sender = Sender(self.http, job=job.name, backoff=job.retry_backoff)
        # Enough batches in flight to keep every slot busy while the oldest one finishes, and
        # no more: a batch waiting here holds its rows without sending them any sooner.
        per_batch = -(-job.batch_size // self.http.rows_in_request)
        self.max_pending = max(2, -(-self.http.concurrency // per_batch) + 1)
        self._pending: collections.deque[_Pending] = collections.deque()
        self.budget = RejectBudget(
            job, result, lambda reject: f"the endpoint refused a row: {reject[2]}"
        )
        self._encoder: RowEncoder | None = None
        self._key_index: list[int] = []
        self._hook = load_request_hook(self.http.request) if self.http.request else None

    # --- Preparing ------------------------------------------------------------------------------

    async def prepare(self, incoming: Sequence[schema.Column], typed: set[str]) -> None:
        """Learn the columns and their types; open the session."""
        self.columns = tuple(c.name for c in incoming)
        missing = [k for k in self.job.read_key or [] if k not in self.columns]
        if missing:
            raise SchemaError(
                f"the rows sent have no key column {missing[0]!r}: an HTTP target names its "
                "requests by their rows' keys, so the transform must keep the key columns",
                job=self.job.name,
                column=missing[0],
            )
        self._key_index = [self.columns.index(k) for k in self.job.read_key or []]
        self._encoder = RowEncoder(self.columns, {c.name: c.type for c in incoming})
        await self.sender.start()
        self.ready = True

    async def attach(self, columns: Sequence[str]) -> None:
        """Parallel pipelines are not used with HTTP targets."""
        raise LoadError("an HTTP target runs one pipeline", job=self.job.name)

    async def prepare_rows(self) -> None:
        """Nothing to install: rows are encoded as JSON per request."""

    # --- Writing --------------------------------------------------------------------------------

    async def write(
        self,
        seq: int,
        rows: Sequence[Sequence[Any]],
        *,
        rows_read: int,
        position: list[str] | None,
        rejects: Sequence[Reject] = (),
    ) -> None:
        """Start sending one batch; commit the ledger rows of the batches that are done.

        Returns once at most ``max_pending`` batches are in flight: enough to keep
        ``concurrency`` requests going across batch boundaries.
        """
        task = asyncio.create_task(self._send_batch(seq, list(rows)))
        self._pending.append(_Pending(seq, rows_read, position, list(rejects), task))
        await self._commit_done(keep=self.max_pending)

    async def _commit_done(self, keep: int) -> None:
        """Commit finished batches in order; wait on the oldest while more than ``keep`` fly."""
        for batch in self._pending:
            if batch.task.done() and not batch.task.cancelled() and batch.task.exception():
                await batch.task  # fail now: later batches need not wait for earlier ones
        while self._pending and (self._pending[0].task.done() or len(self._pending) > keep):
            head = self._pending[0]
            written, refused, sent = await head.task
            self._pending.popleft()
            await self._commit(head, written, refused, sent)

    async def _commit(
        self, batch: _Pending, written: int, refused: list[Reject], sent: int
    ) -> None:
        found = [*batch.rejects, *refused]
        job = self.job
        try:
            async with self.conn.transaction():
                if found:
                    self.budget.check(batch.seq, found)
                    await self.store.add_rejects(
                        self.conn,
                        job=job.name,
                        partition=self.partition,
                        run_id=self.result.run_id,
                        batch=batch.seq,
                        rejects=found,
                    )
                kind = self.plan.position_kind
                await self.store.save_batch(
                    self.conn,
                    job.name,
                    self.partition,
                    watermark=batch.position if kind == "watermark" else None,
                    progress=batch.position if kind == "progress" else None,
                    run_id=self.result.run_id,
                    rows=written,
                )
        except PgferryError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise TransientLoadError(
                f"could not record batch {batch.seq} in the state database: "
                f"{type(exc).__name__}: {exc}",
                job=job.name,
                batch=batch.seq,
            ) from exc
        self.budget.committed(found)
        r = self.result
        r.rows_written += written
        r.rows_rejected += len(found)
        r.rows_read += batch.rows_read
        r.batches += 1
        r.bytes_written += sent
        if batch.position is not None and self.plan.position_kind == "watermark":
            r.watermark_after = batch.position[0]

    async def _send_batch(
        self, seq: int, rows: list[Sequence[Any]]
    ) -> tuple[int, list[Reject], int]:
        """Send every request of a batch; ``(rows accepted, rows refused, bytes sent)``."""
        n = self.http.rows_in_request
        ordinals = self._ordinals(rows)
        chunks = [(rows[i : i + n], ordinals[i : i + n]) for i in range(0, len(rows), n)]
        del rows, ordinals
        results = await _together([self._send_rows(seq, *chunk) for chunk in chunks])
        return (
            sum(r[0] for r in results),
            [rej for r in results for rej in r[1]],
            sum(r[2] for r in results),
        )

    async def _send_rows(
        self, seq: int, rows: list[Sequence[Any]], ordinals: list[int]
    ) -> tuple[int, list[Reject], int]:
        """Send ``rows`` as one request; if refused, split it in halves until the bad rows are
        isolated (about ``b * log2(n)`` extra requests for ``b`` bad rows among ``n``)."""
        body, headers = self._request(rows, ordinals)
        try:
            await self.sender.send(body, headers, batch=seq)
            return len(rows), [], len(body)
        except HttpRejected as exc:
            if len(rows) == 1:
                return 0, [self._reject(rows[0], exc)], 0
        del body
        mid = (len(rows) + 1) // 2
        (w1, r1, b1), (w2, r2, b2) = await _together(
            [
                self._send_rows(seq, rows[:mid], ordinals[:mid]),
                self._send_rows(seq, rows[mid:], ordinals[mid:]),
            ]
        )
        return w1 + w2, r1 + r2, b1 + b2

    def _row_key(self, row: Sequence[Any]) -> list[str]:
        return position_text([row[i] for i in self._key_index])

    def _ordinals(self, rows: Sequence[Sequence[Any]]) -> list[int]:
        """For each row, how many rows before it in the batch have the same key (a transform
        that fans a row out). A request is named by its first and last rows' keys and, past
        0, their ordinals: without them, requests holding only rows of one key (one row a
        request, say) would share an idempotency key, and the server would drop all but the
        first as replays. A fanned-out row's rows are always in one batch, in the transform's
        order, so a rerun names them alike. Keys are compared as read (text only for the
        two rows that name a request)."""
        if not self.http.idempotency_header:
            return [0] * len(rows)
        seen: dict[Any, int] = {}
        ordinals = []
        index = self._key_index
        for row in rows:
            key = tuple([row[i] for i in index])
            try:
                n = seen[key] = seen.get(key, -1) + 1
            except TypeError:  # an unhashable key value (an array): its text
                text = tuple(self._row_key(row))
                n = seen[text] = seen.get(text, -1) + 1
            ordinals.append(n)
        return ordinals

    def _request_key(self, row: Sequence[Any], ordinal: int) -> list[str]:
        key = self._row_key(row)
        return [*key, str(ordinal)] if ordinal else key

    def _request(
        self, rows: list[Sequence[Any]], ordinals: list[int]
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one request."""
        http = self.http
        headers = {"Content-Type": _CONTENT_TYPES[http.format]}
        if http.idempotency_header:
            headers[http.idempotency_header] = idempotency_key(
                self.job.name,
                self.partition,
                self._request_key(rows[0], ordinals[0]),
                self._request_key(rows[-1], ordinals[-1]),
            )
        if self._hook is not None:
            return self._hooked(rows, headers)
        enc = self._encoder
        assert enc is not None
        try:
            if http.format == "ndjson":
                body = enc.lines(rows)
            elif http.format == "row":
                body = enc.one(rows[0])
            else:
                body = enc.array(rows)
        except (TypeError, ValueError) as exc:
            raise LoadError(
                f"cannot encode a row as JSON: {type(exc).__name__}: {exc}", job=self.job.name
            ) from exc
        return body, headers

    def _hooked(
        self, rows: list[Sequence[Any]], headers: dict[str, str]
    ) -> tuple[bytes, dict[str, str]]:
        assert self._hook is not None
        dicts = [dict(zip(self.columns, r, strict=True)) for r in rows]
        try:
            out = self._hook(dicts)
        except Exception as exc:
            raise LoadError(
                f"target.http.request {self.http.request!r} failed: {type(exc).__name__}: {exc}",
                job=self.job.name,
            ) from exc
        body = out
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict):
            body, extra = out
            headers.update({str(k): str(v) for k, v in extra.items()})
        if isinstance(body, bytes):
            return body, headers
        if isinstance(body, str):
            return body.encode(), headers
        return dumps(body).encode(), headers

    # --- Rejects --------------------------------------------------------------------------------

    def _reject(self, row: Sequence[Any], exc: HttpRejected) -> Reject:
        as_dict = dict(zip(self.columns, row, strict=True))
        key = ", ".join(
            f"{k}={v}" for k, v in zip(self.job.read_key or [], self._row_key(row), strict=True)
        )
        message = f"HTTP {exc.status} {exc.reason} for the row with {key}: {exc.excerpt}"
        return ("load", f"HTTP {exc.status}", message, None, as_dict)

    # --- Finishing ------------------------------------------------------------------------------

    async def finish(self) -> None:
        """Wait for every batch, commit the ledger, end the run's progress.

        Called also when no row came (the sink was never prepared): a run that resumed at the
        end still ends its progress, so that the next one starts from the beginning.
        """
        await self._commit_done(keep=0)
        self.budget.check_fraction()
        if self.plan.position_kind == "progress":
            async with self.conn.transaction():
                await self.store.clear_progress(self.conn, self.job.name, self.partition)
                await self.store.mark_committed(self.conn, self.result.run_id)
        log.info(
            "job %s: %d requests to %s (%d tries, %d pauses after 429)",
            self.job.name,
            self.sender.requests,
            self.sender.shown_url,
            self.sender.tries,
            self.sender.limiter.pauses,
        )
        await self.sender.close()

    async def abort(self) -> None:
        """Stop every request in flight and close the session; nothing more is committed."""
        pending, self._pending = list(self._pending), collections.deque()
        for batch in pending:
            batch.task.cancel()
        for batch in pending:
            try:
                await batch.task
            except BaseException:  # cancelled, or the error the run already reports
                log.debug("batch %d abandoned", batch.seq, exc_info=True)
        await self.sender.close()
