"""State in the target database: the ledger, the run history and the rejects.

Everything lives in one schema (``pgferry`` by default), created on first use and versioned in
``<schema>.meta`` so that later releases can migrate it. The ledger row of a (job, partition) is
written in the same transaction as each batch's rows, which is what makes resuming exact.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from pgferry import sql
from pgferry.errors import PgferryError
from pgferry.result import RunResult

__all__ = ["SCHEMA_VERSION", "LedgerEntry", "StateStore"]

log = logging.getLogger("pgferry")

SCHEMA_VERSION = 4


@dataclass(frozen=True)
class LedgerEntry:
    """What the ledger knows about a (job, partition).

    Attributes:
        watermark: The incremental position ``[column value, key values…]`` as text, committed
            with the last batch of an incremental load.
        progress: The position reached by an unfinished non-incremental run, as text; the next
            run continues after it. Cleared when a run finishes.
        progress_run: The run that wrote ``progress``.
        batches: Batches committed over all runs.
        rows_written: Rows written over all runs.
    """

    watermark: list[str] | None
    progress: list[str] | None
    progress_run: str | None
    batches: int
    rows_written: int


def _ddl(schema: str) -> list[str]:
    return [sql.in_schema(statement, schema) for statement in _DDL]


# Statements that bring the state schema from version N-1 to N. A new release appends here; the
# first run of the new release applies them in order, under the state lock.
_MIGRATIONS: dict[int, list[str]] = {
    2: [
        # The orchestrator's identity of a run (dag run and task, say): a plain append that
        # already succeeded under the same key is not done twice.
        "ALTER TABLE {s}.runs ADD COLUMN IF NOT EXISTS run_key text",
        "CREATE INDEX IF NOT EXISTS runs_run_key ON {s}.runs (job, partition, run_key) "
        "WHERE run_key IS NOT NULL",
    ],
    3: [
        # When the run's rows were all committed: written in the same transaction as the last
        # of them, so a run that committed and then crashed still counts as done for its key.
        "ALTER TABLE {s}.runs ADD COLUMN IF NOT EXISTS committed_at timestamptz",
    ],
    4: [
        # What the run changed in the target's shape (RunResult.schema_changes): the history
        # says when a column appeared or was widened, and by which run.
        "ALTER TABLE {s}.runs ADD COLUMN IF NOT EXISTS schema_changes jsonb",
    ],
}


_DDL = [
    "CREATE SCHEMA IF NOT EXISTS {s}",
    "CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS {s}.ledger (
            job text NOT NULL,
            partition text NOT NULL DEFAULT '',
            watermark text[],
            progress text[],
            progress_run uuid,
            batches bigint NOT NULL DEFAULT 0,
            rows_written bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (job, partition))""",
    """CREATE TABLE IF NOT EXISTS {s}.runs (
            run_id uuid PRIMARY KEY,
            job text NOT NULL,
            partition text NOT NULL DEFAULT '',
            started_at timestamptz NOT NULL,
            finished_at timestamptz,
            status text NOT NULL,
            mode text,
            attempts int NOT NULL DEFAULT 1,
            rows_read bigint NOT NULL DEFAULT 0,
            rows_written bigint NOT NULL DEFAULT 0,
            rows_rejected bigint NOT NULL DEFAULT 0,
            watermark_before text,
            watermark_after text,
            stages jsonb,
            error text,
            host text,
            pid int)""",
    "CREATE INDEX IF NOT EXISTS runs_job_started ON {s}.runs (job, started_at DESC)",
    """CREATE TABLE IF NOT EXISTS {s}.rejects (
            id bigserial PRIMARY KEY,
            job text NOT NULL,
            partition text NOT NULL DEFAULT '',
            run_id uuid NOT NULL,
            batch bigint NOT NULL,
            stage text NOT NULL,
            error_class text NOT NULL,
            message text NOT NULL,
            "column" text,
            row jsonb,
            created_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX IF NOT EXISTS rejects_job_run ON {s}.rejects (job, run_id)",
]


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


def row_json(row: dict[str, Any]) -> str:
    """A row as JSON text for the rejects table (values JSON cannot hold become text)."""
    return json.dumps(row, default=_json_default)


class StateStore:
    """The ledger, runs and rejects of one target database.

    Args:
        schema: The state schema's name.
    """

    def __init__(self, schema: str = "pgferry") -> None:
        self.schema = schema
        self.q = sql.quote_ident(schema)

    def _sql(self, template: str) -> str:
        return sql.in_schema(template, self.schema)

    async def ensure(self, conn: asyncpg.Connection) -> None:
        """Create the state schema if needed and check its version."""
        async with conn.transaction():
            # Serialise concurrent first runs: CREATE … IF NOT EXISTS can still collide.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                f"pgferry-state:{self.schema}",
            )
            exists = await conn.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", self._sql("{s}.meta")
            )
            if exists:
                version = await conn.fetchval(
                    self._sql("SELECT value::int FROM {s}.meta WHERE key = 'schema_version'")
                )
                if version is not None and version > SCHEMA_VERSION:
                    raise PgferryError(
                        f"state schema {self.schema} has version {version}, newer than this "
                        f"pgferry understands ({SCHEMA_VERSION}): upgrade pgferry"
                    )
                if version == SCHEMA_VERSION:
                    return
            else:
                version = None
            if version is None:
                for statement in _ddl(self.schema):
                    await conn.execute(statement)
                version = 1
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    await conn.execute(sql.in_schema(statement, self.schema))
                log.info("state schema %s migrated to version %d", self.schema, target)
            await conn.execute(
                self._sql(
                    "INSERT INTO {s}.meta VALUES ('schema_version', $1) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ),
                str(SCHEMA_VERSION),
            )

    # --- Ledger ----------------------------------------------------------------------------

    async def read(self, conn: asyncpg.Connection, job: str, partition: str) -> LedgerEntry | None:
        """The ledger entry of (job, partition), if any."""
        row = await conn.fetchrow(
            self._sql(
                "SELECT watermark, progress, progress_run::text, batches, rows_written "
                "FROM {s}.ledger WHERE job = $1 AND partition = $2"
            ),
            job,
            partition,
        )
        if row is None:
            return None
        return LedgerEntry(row[0], row[1], row[2], row[3], row[4])

    async def save_batch(
        self,
        conn: asyncpg.Connection,
        job: str,
        partition: str,
        *,
        watermark: Sequence[str] | None,
        progress: Sequence[str] | None,
        run_id: str,
        rows: int,
    ) -> None:
        """Record a committed batch; call inside the batch's transaction.

        ``watermark`` (incremental) or ``progress`` (resumable full load) is the position of
        the batch's last source row; ``None`` leaves the stored value as it is.
        """
        await conn.execute(
            self._sql("""INSERT INTO {s}.ledger AS l
                  (job, partition, watermark, progress, progress_run, batches, rows_written)
                VALUES ($1, $2, $3, $4, $5::uuid, 1, $6)
                ON CONFLICT (job, partition) DO UPDATE SET
                  watermark = coalesce(EXCLUDED.watermark, l.watermark),
                  progress = coalesce(EXCLUDED.progress, l.progress),
                  progress_run = coalesce(EXCLUDED.progress_run, l.progress_run),
                  batches = l.batches + 1,
                  rows_written = l.rows_written + EXCLUDED.rows_written,
                  updated_at = now()"""),
            job,
            partition,
            list(watermark) if watermark is not None else None,
            list(progress) if progress is not None else None,
            run_id if progress is not None else None,
            rows,
        )

    async def clear_progress(self, conn: asyncpg.Connection, job: str, partition: str) -> None:
        """A full run finished: the next one starts from the beginning."""
        await conn.execute(
            self._sql(
                "UPDATE {s}.ledger SET progress = NULL, progress_run = NULL, updated_at = now() "
                "WHERE job = $1 AND partition = $2"
            ),
            job,
            partition,
        )

    async def reset(self, conn: asyncpg.Connection, job: str, partition: str | None) -> int:
        """Forget the ledger of a job (one partition, or all); returns entries removed."""
        status = await conn.execute(
            self._sql(
                "DELETE FROM {s}.ledger WHERE job = $1 AND ($2::text IS NULL OR partition = $2)"
            ),
            job,
            partition,
        )
        return int(status.split()[-1])

    # --- Runs ------------------------------------------------------------------------------

    async def find_committed(
        self, conn: asyncpg.Connection, job: str, partition: str, run_key: str
    ) -> dict[str, Any] | None:
        """The run of (job, partition) that committed its rows under ``run_key``, if any.

        A run counts once its last rows are committed (``committed_at``), even if the process
        died before it could record its outcome.
        """
        row = await conn.fetchrow(
            self._sql(
                "SELECT run_id::text, status, started_at, committed_at, rows_read, rows_written, "
                "rows_rejected FROM {s}.runs "
                "WHERE job = $1 AND partition = $2 AND run_key = $3 AND committed_at IS NOT NULL "
                "ORDER BY committed_at DESC LIMIT 1"
            ),
            job,
            partition,
            run_key,
        )
        return dict(row) if row is not None else None

    async def mark_committed(self, conn: asyncpg.Connection, run_id: str) -> None:
        """Record that the run's rows are all committed; call it in their last transaction."""
        await conn.execute(
            self._sql(
                "UPDATE {s}.runs SET committed_at = now() "
                "WHERE run_id = $1::uuid AND committed_at IS NULL"
            ),
            run_id,
        )

    async def start_run(
        self,
        conn: asyncpg.Connection,
        result: RunResult,
        partition: str,
        run_key: str | None = None,
        status: str = "running",
    ) -> None:
        """Insert the run's row (status ``running``, or ``skipped``); mark runs a crash left
        behind as abandoned."""
        await conn.execute(
            self._sql(
                "UPDATE {s}.runs SET status = 'abandoned', finished_at = now(), "
                "error = 'the process ended without recording an outcome' "
                "WHERE job = $1 AND partition = $2 AND status = 'running'"
            ),
            result.job,
            partition,
        )
        await conn.execute(
            self._sql(
                "INSERT INTO {s}.runs (run_id, job, partition, started_at, status, mode, "
                "host, pid, run_key) VALUES ($1::uuid, $2, $3, $4, $9, $5, $6, $7, $8)"
            ),
            result.run_id,
            result.job,
            partition,
            dt.datetime.fromisoformat(result.started_at),
            result.mode,
            socket.gethostname(),
            os.getpid(),
            run_key,
            status,
        )

    async def finish_run(self, conn: asyncpg.Connection, result: RunResult, attempts: int) -> None:
        """Record the outcome and counters of a run."""
        stages = {
            name: {"busy_s": s.busy_s, "wait_s": s.wait_s} for name, s in result.stages.items()
        }
        await conn.execute(
            self._sql("""UPDATE {s}.runs SET finished_at = now(), status = $2, attempts = $3,
                  rows_read = $4, rows_written = $5, rows_rejected = $6,
                  watermark_before = $7, watermark_after = $8, stages = $9::jsonb, error = $10,
                  schema_changes = $11::jsonb,
                  committed_at = CASE WHEN $2 = 'success' THEN coalesce(committed_at, now())
                                      ELSE committed_at END
                WHERE run_id = $1::uuid"""),
            result.run_id,
            result.status,
            attempts,
            result.rows_read,
            result.rows_written,
            result.rows_rejected,
            _text(result.watermark_before),
            _text(result.watermark_after),
            json.dumps(stages),
            result.error,
            json.dumps(result.schema_changes) if result.schema_changes else None,
        )

    async def recent_runs(
        self, conn: asyncpg.Connection, job: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """The latest runs, newest first (all jobs, or one)."""
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", self._sql("{s}.runs")):
            return []
        rows = await conn.fetch(
            # Read-only, so never migrated here: a column newer than the schema (written by a
            # later version's runs) is read through to_jsonb, NULL where it does not exist.
            self._sql("""SELECT run_id::text, job, partition, status, started_at, finished_at,
                       attempts, rows_read, rows_written, rows_rejected, watermark_before,
                       watermark_after, error, to_jsonb(r) ->> 'schema_changes' AS schema_changes
                FROM {s}.runs r WHERE $1::text IS NULL OR job = $1
                ORDER BY started_at DESC LIMIT $2"""),
            job,
            limit,
        )
        runs = [dict(r) for r in rows]
        for run in runs:
            run["schema_changes"] = json.loads(run["schema_changes"] or "[]")
        return runs

    # --- Rejects ---------------------------------------------------------------------------

    async def add_rejects(
        self,
        conn: asyncpg.Connection,
        *,
        job: str,
        partition: str,
        run_id: str,
        batch: int,
        rejects: Sequence[tuple[str, str, str, str | None, dict[str, Any]]],
    ) -> None:
        """Store rejected rows: ``(stage, error class, message, column, row)`` each."""
        await conn.executemany(
            self._sql(
                "INSERT INTO {s}.rejects (job, partition, run_id, batch, stage, error_class, "
                '"column", message, row) VALUES ($1, $2, $3::uuid, $4, $5, $6, $7, $8, $9::jsonb)'
            ),
            [
                (job, partition, run_id, batch, stage, cls, column, message, row_json(row))
                for stage, cls, message, column, row in rejects
            ],
        )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
