"""The PostgreSQL sink: batches into a table, each with its ledger entry in one transaction.

:class:`PostgresSink` owns the target side of a run: it creates or checks the table, writes each
batch (``COPY``, or ``COPY`` into a staging table and a merge for ``upsert``), isolates rows the
target refuses by bisecting the batch, records rejects and the ledger position in the same
transaction, and at the end commits, clears progress, syncs deletes or swaps the shadow in.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from pgferry import keys, schema, sql
from pgferry.engine import values
from pgferry.engine.plan import SourcePlan
from pgferry.engine.schema_step import SchemaStep
from pgferry.engine.sinks import postgres_copy
from pgferry.engine.sinks.base import Reject
from pgferry.engine.sinks.postgres_errors import explain_encode_failure, load_failure
from pgferry.engine.sinks.rejects import RejectBudget
from pgferry.engine.sinks.replace import ReplacePlan
from pgferry.errors import PgferryError, SchemaError
from pgferry.result import RunResult
from pgferry.schema import Column
from pgferry.spec import Job
from pgferry.sql import TableName
from pgferry.state import StateStore

__all__ = ["STAGE", "PostgresSink"]

log = logging.getLogger("pgferry")

# Errors that one bad row can cause; anything else (a lost connection, a full disk) is not
# narrowed down by bisecting.
_ROW_ERRORS = (
    asyncpg.DataError,
    asyncpg.InternalClientError,
    asyncpg.IntegrityConstraintViolationError,
    TypeError,
    ValueError,
    OverflowError,
)
STAGE = "pgferry_stage"
"""The upsert staging table (a temporary table of the loader's session)."""


class PostgresSink:
    """The target side of one run attempt, when the target is a PostgreSQL table.

    Args:
        job: The job.
        conn: The target connection (holding the run's advisory lock).
        store: The state store.
        result: The run's result, whose counters the writer updates on every commit.
        plan: The source plan (transaction scope, position kind).
    """

    def __init__(
        self,
        job: Job,
        conn: asyncpg.Connection,
        store: StateStore,
        result: RunResult,
        plan: SourcePlan,
    ) -> None:
        self.job = job
        self.conn = conn
        self.store = store
        self.result = result
        self.plan = plan
        self.partition = job.partition.name if job.partition else ""
        self.table = job.target.pg_table
        self.copy_into: TableName = self.table
        self.replace: ReplacePlan | None = None
        self.columns: tuple[str, ...] = ()
        self.casts: dict[str, str | None] = {}
        self.types: dict[str, str] = {}
        self.upsert = job.target.mode == "upsert"
        self.size_before = 0
        self.ready = False
        self._run_tx: Any = None
        self.budget = RejectBudget(job, result, self._describe)
        self._json_as_text: values.JsonAsText | None = None
        self._carried: dict[str, str] = {}

    # --- Preparing the target ----------------------------------------------------------------

    async def prepare(self, incoming: Sequence[Column], typed: set[str]) -> None:
        """Create or check the target for the incoming columns; start the run transaction."""
        conn, job = self.conn, self.job
        existing = await schema.describe_table(conn, self.table)
        step: SchemaStep | None = None
        if existing is not None:
            # The schema step: every difference decided before any row is written. With
            # schema_changes: discard, new columns are left out of ``incoming`` (and so out of
            # ``columns``: the load stage drops them from the rows).
            step = await SchemaStep.decide(conn, job, self.table, incoming, existing, typed=typed)
            incoming = step.columns
            if job.target.mode != "replace":
                if await self._evolve(step, None):
                    existing = await schema.describe_table(conn, self.table) or existing
                self.casts = await schema.match_target(
                    conn, self.table, incoming, existing, typed=typed
                )
        if job.target.mode == "replace":
            self.replace = ReplacePlan(self.table, existed=existing is not None)
            self.copy_into = self.replace.shadow
            if existing is not None:
                assert step is not None
                await self.replace.create_shadow_like_target(conn)
                # The shadow takes the changes; the live table changes only with the swap.
                await self._evolve(step, self.copy_into)
                shadow = await schema.describe_table(conn, self.copy_into) or existing
                self.casts = await schema.match_target(
                    conn, self.table, incoming, shadow, typed=typed
                )
            else:
                await self.replace.drop_shadow(conn)
                await schema.create_table(
                    conn,
                    self.copy_into,
                    incoming,
                    primary_key=self._primary_key(incoming),
                    comment=self.plan.comment,
                )
        elif existing is None:
            try:
                async with conn.transaction():
                    primary_key = self._primary_key(incoming)
                    await schema.create_table(
                        conn,
                        self.table,
                        incoming,
                        primary_key=primary_key,
                        comment=self.plan.comment,
                    )
                    if self.upsert and job.upsert_key and not primary_key:
                        await conn.execute(sql.create_unique_index(self.table, job.upsert_key))
                log.info("created target table %s", self.table)
            except (asyncpg.DuplicateTableError, asyncpg.UniqueViolationError):
                # Another run created it meanwhile (two CREATE TABLEs racing may also collide
                # on the catalog's unique index of type names): check against what is there now.
                await self.prepare(incoming, typed)
                return
        self.columns = tuple(c.name for c in incoming)
        self.types = {
            c.name: c.type for c in await schema.describe_table(conn, self.copy_into) or []
        }
        if self.upsert:
            await self._prepare_upsert()
        self.size_before = await schema.table_size(conn, self.copy_into)
        if self.plan.txn_scope == "run":
            self._run_tx = conn.transaction()
            await self._run_tx.start()
            part = job.partition
            if part is not None and part.replace:
                await self._delete_partition()
        self.ready = True

    async def _evolve(self, step: SchemaStep, where: TableName | None) -> bool:
        """Make the step's changes (to ``where``, else the target); report them."""
        made = await step.apply(self.conn, where)
        for change in made:
            if change.as_dict() not in self.result.schema_changes:  # a retried replace
                self.result.schema_changes.append(change.as_dict())
        return bool(made)

    def _primary_key(self, incoming: Sequence[Column]) -> tuple[str, ...]:
        return keys.created_primary_key(self.job, self.plan.key, incoming)

    async def attach(self, columns: Sequence[str]) -> None:
        """Write into a target that a parallel run's coordinator prepared (created, checked,
        or for ``replace`` its shadow): no table is created, no run transaction started."""
        conn, job = self.conn, self.job
        if job.target.mode == "replace":
            self.copy_into = ReplacePlan(self.table, existed=True).shadow
        self.columns = tuple(columns)
        described = await schema.describe_table(conn, self.copy_into)
        if described is None:
            raise SchemaError(
                f"target table {self.copy_into} disappeared during the run", job=job.name
            )
        self.types = {c.name: c.type for c in described}
        missing = [c for c in self.columns if c not in self.types]
        if missing:
            raise SchemaError(
                f"target table {self.copy_into} has no column {missing[0]!r}",
                job=job.name,
                column=missing[0],
            )
        if self.upsert:
            await self._prepare_upsert()
        self.ready = True

    async def prepare_rows(self) -> None:
        """Install the target connection's codecs for writing decoded rows."""
        self._json_as_text = await values.prepare_target(self.conn, self.columns, self.types)

    async def _prepare_upsert(self) -> None:
        key = self.job.upsert_key or []
        missing = [k for k in key if k not in self.columns]
        if missing:
            raise SchemaError(
                f"upsert key column {missing[0]!r} is not among the rows written to {self.table}",
                job=self.job.name,
                column=missing[0],
            )
        unique = [set(r[0]) for r in await self.conn.fetch(sql.UNIQUE_INDEXES, self.table.sql)]
        if set(key) not in unique:
            raise SchemaError(
                f"target table {self.table} has no unique index on ({', '.join(key)}), which "
                "upsert needs: create one, or let pgferry create the table",
                job=self.job.name,
            )
        await self.conn.execute(f"DROP TABLE IF EXISTS pg_temp.{sql.quote_ident(STAGE)}")
        await self.conn.execute(sql.create_stage(STAGE, self.table))

    async def _delete_partition(self) -> None:
        part = self.job.partition
        assert part is not None
        if part.column not in self.types:
            raise SchemaError(
                f"target table {self.table} has no column {part.column!r} to reload the "
                "partition by",
                job=self.job.name,
                column=part.column,
            )
        args = [str(v) for v in (part.lower, part.upper) if v is not None]
        lower = 1 if part.lower is not None else None
        upper = (2 if lower else 1) if part.upper is not None else None
        status = await self.conn.execute(
            sql.delete_range(self.copy_into, part.column, self.types[part.column], lower, upper),
            *args,
        )
        # `=`, not `+=`: a failed attempt's delete was rolled back with its run transaction.
        self.result.rows_deleted = int(status.split()[-1])
        log.info(
            "partition %s: deleted %d rows before reloading it", part.name, self.result.rows_deleted
        )

    # --- Writing batches -----------------------------------------------------------------------

    async def write(
        self,
        seq: int,
        rows: Sequence[Sequence[Any]],
        *,
        rows_read: int,
        position: list[str] | None,
        rejects: Sequence[Reject] = (),
    ) -> None:
        """Write one batch, its rejects and its ledger entry in one transaction.

        Raises:
            LoadError: The target refused rows past ``max_rejects``, or failed otherwise; a
                value that cannot be encoded for its column is named with its row.
        """
        try:
            await self._write(seq, rows, rows_read=rows_read, position=position, rejects=rejects)
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise await explain_encode_failure(
                exc,
                self.conn,
                job=self.job.name,
                table=self.table,
                copy_into=self.copy_into,
                batch=seq,
                columns=self.columns,
                rows=rows,
            ) from exc

    async def _write(
        self,
        seq: int,
        rows: Sequence[Sequence[Any]],
        *,
        rows_read: int,
        position: list[str] | None,
        rejects: Sequence[Reject],
    ) -> None:
        batch = list(rows)
        if self._json_as_text is not None:
            batch = self._json_as_text(batch)
        await self._commit(
            seq, lambda: self._write_bisect(seq, batch), rejects, rows_read, position
        )

    async def _commit(
        self,
        seq: int,
        write: Callable[[], Awaitable[tuple[int, list[Reject]]]],
        rejects: Sequence[Reject],
        rows_read: int,
        position: list[str] | None,
    ) -> None:
        """``write()`` the batch, its rejects and its ledger entry in one transaction."""
        conn, job = self.conn, self.job
        try:
            async with conn.transaction():
                written, refused = await write()
                found = [*rejects, *refused]
                if found:
                    self.budget.check(seq, found)
                    await self.store.add_rejects(
                        conn,
                        job=job.name,
                        partition=self.partition,
                        run_id=self.result.run_id,
                        batch=seq,
                        rejects=found,
                    )
                await self.store.save_batch(
                    conn,
                    job.name,
                    self.partition,
                    watermark=position if self.plan.position_kind == "watermark" else None,
                    progress=position if self.plan.position_kind == "progress" else None,
                    run_id=self.result.run_id,
                    rows=written,
                )
        except PgferryError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise load_failure(
                exc, job=job.name, table=self.table, batch=seq, columns=self.columns
            ) from exc
        self.budget.committed(found)
        self.result.rows_written += written
        self.result.rows_rejected += len(found)
        self.result.rows_read += rows_read
        self.result.batches += 1
        if position is not None and self.plan.position_kind == "watermark":
            self.result.watermark_after = position[0]

    # --- Binary COPY batches (the columnar lane; in engine.sinks.postgres_copy) ----------------

    async def prepare_copy(self, carried: Sequence[str]) -> None:
        """Get ready for :meth:`write_copy`; ``carried`` columns arrive as text, cast by the
        server."""
        self._carried = await postgres_copy.prepare(self.conn, self.columns, self.types, carried)

    async def write_copy(
        self,
        seq: int,
        batch: postgres_copy.CopyBatch,
        *,
        rows_read: int,
        position: list[str] | None,
        rejects: Sequence[Reject] = (),
    ) -> None:
        """Write one batch given as binary COPY, its rejects and its ledger entry in one
        transaction. Rows the target refuses are set aside within ``max_rejects`` (the batch
        is halved until they are found, each try in a savepoint)."""

        def write() -> Awaitable[tuple[int, list[Reject]]]:
            return postgres_copy.write_isolating(self, batch, carried=self._carried, stage=STAGE)

        await self._commit(seq, write, rejects, rows_read, position)

    async def _copy(self, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        target = self.copy_into
        if not self.upsert:
            await self.conn.copy_records_to_table(
                target.name, schema_name=target.schema, columns=list(self.columns), records=rows
            )
            return len(rows)
        await self.conn.copy_records_to_table(STAGE, columns=list(self.columns), records=rows)
        status = await self.conn.execute(
            sql.merge_stage(target, STAGE, self.columns, self.job.upsert_key or [])
        )
        await self.conn.execute(sql.truncate(STAGE))
        return int(status.split()[-1])

    async def _write_bisect(self, seq: int, rows: list[Sequence[Any]]) -> tuple[int, list[Reject]]:
        """Write ``rows``; on a row-level error split them until the bad rows are isolated.

        Every attempt runs in a savepoint, so a failed half leaves nothing behind. Finding
        ``b`` bad rows among ``n`` costs about ``b * log2(n)`` extra COPYs, only on failure.
        """
        try:
            async with self.conn.transaction():
                return await self._copy(rows), []
        except _ROW_ERRORS as exc:
            if len(rows) == 1:
                reject = await self._describe_reject(exc, rows[0])
                if self.job.max_rejects == 0:
                    raise self.budget.error(seq, reject) from exc
                return 0, [reject]
            mid = len(rows) // 2
            w1, r1 = await self._write_bisect(seq, rows[:mid])
            w2, r2 = await self._write_bisect(seq, rows[mid:])
            return w1 + w2, r1 + r2

    async def _describe_reject(self, exc: BaseException, row: Sequence[Any]) -> Reject:
        as_dict = dict(zip(self.columns, row, strict=True))
        if isinstance(exc, asyncpg.PostgresError):
            err = load_failure(
                exc, job=self.job.name, table=self.table, batch=None, columns=self.columns
            )
            column = err.column
        else:
            err = await explain_encode_failure(
                exc,
                self.conn,
                job=self.job.name,
                table=self.table,
                copy_into=self.copy_into,
                batch=0,
                columns=self.columns,
                rows=[row],
            )
            column = err.column
        message = f"{type(exc).__name__}: {exc}"
        return ("load", type(exc).__name__, message, column, as_dict)

    def _row_key(self, row: dict[str, Any]) -> str:
        key = self.job.upsert_key or self.job.read_key or []
        shown = [k for k in key if k in row]
        if not shown:
            return "a row (set target.key to name rows by their key)"
        return "the row with " + ", ".join(f"{k}={row[k]!r}" for k in shown)

    def _describe(self, reject: Reject) -> str:
        stage, _, message, column, row = reject
        what = "the transform failed on" if stage == "transform" else f"{self.table} refused"
        where = f" column {column!r} of" if column else ""
        return f"{what}{where} {self._row_key(row)}: {message}"

    def check_reject_fraction(self) -> None:
        """At the end of a run: a fractional ``max_rejects`` against the rows read."""
        self.budget.check_fraction()

    # --- Finishing ----------------------------------------------------------------------------

    async def finish(self) -> None:
        """Commit the run transaction, clear progress, sync deletes, swap a shadow in."""
        conn, job = self.conn, self.job
        self.check_reject_fraction()
        if self._run_tx is not None:
            await self.store.save_batch(
                conn,
                job.name,
                self.partition,
                watermark=None,
                progress=None,
                run_id=self.result.run_id,
                rows=0,
            )
            # With the rows, so that a run key counts as done exactly when its rows do.
            await self.store.mark_committed(conn, self.result.run_id)
            await self._run_tx.commit()
            self._run_tx = None
        if self.plan.position_kind == "progress":
            async with conn.transaction():
                await self.store.clear_progress(conn, job.name, self.partition)
                await self.store.mark_committed(conn, self.result.run_id)
        if self.replace is not None:
            await self.replace.swap(conn, lock_timeout=job.lock_timeout, retries=job.swap_retries)
            self.result.bytes_written = await schema.table_size(conn, self.table)
        else:
            grown = await schema.table_size(conn, self.table) - self.size_before
            self.result.bytes_written = max(0, grown)

    async def abort(self) -> None:
        """Undo what a failed attempt left: the open run transaction and the shadow table."""
        if self.conn.is_closed():
            return
        if self._run_tx is not None:
            try:
                await self._run_tx.rollback()
            except Exception:  # the connection may be broken; the server rolls back anyway
                log.debug("rollback of the run transaction failed", exc_info=True)
            self._run_tx = None
        if self.replace is not None:
            try:
                await self.replace.drop_shadow(self.conn)
            except Exception:
                log.warning("could not drop the shadow table %s", self.replace.shadow)
