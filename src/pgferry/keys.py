"""Keys from the source: the primary key (else the smallest unique NOT NULL index) as default.

A job that names no key still gets one when its source is a table: its primary key, or if it
has none, the smallest unique index whose columns are all ``NOT NULL`` (a unique index on a
nullable column does not identify rows: NULLs never conflict). That key becomes the default
of ``source.key`` (and so of the incremental tie-breaker, key ranges and partitions) and, for
``upsert``, of ``target.key``. A key in the job file always wins.

The job spec itself never touches a database, so the key is resolved once per attempt, on the
source connection, into a copy of the job (:func:`resolve`) before anything is planned: every
user of ``Job.read_key`` and ``Job.upsert_key``, parallel worker processes included (they get
the resolved job), sees the same key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import asyncpg

from pgferry import schema
from pgferry.errors import ConfigError
from pgferry.schema import Column
from pgferry.spec import Job
from pgferry.sql import TableName

__all__ = [
    "KeyChoice",
    "SourceKeys",
    "choose_key",
    "created_primary_key",
    "read_source_keys",
    "resolve",
]

Origin = Literal["job", "primary key", "unique index", "none"]

# Index columns in index order (indkey), only plain columns; expression and partial indexes
# do not identify rows of the whole table.
_KEYS = """
SELECT c.relname, i.indisprimary,
       array_agg(a.attname::text ORDER BY k.ord) AS cols,
       bool_and(a.attnotnull) AS not_null
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indisvalid
  AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY c.relname, i.indisprimary, i.indnkeyatts
HAVING count(*) = i.indnkeyatts
ORDER BY i.indisprimary DESC, count(*), c.relname
"""


@dataclass(frozen=True)
class SourceKeys:
    """The keys a source table declares.

    Attributes:
        table: The source table.
        primary: Columns of its primary key, in key order, if it has one.
        primary_name: The primary key's constraint (index) name.
        unique: Columns of its smallest unique index on NOT NULL columns, if any.
        unique_name: That index's name.
    """

    table: TableName
    primary: tuple[str, ...] | None = None
    primary_name: str | None = None
    unique: tuple[str, ...] | None = None
    unique_name: str | None = None


@dataclass(frozen=True)
class KeyChoice:
    """Which key a job uses and why (shown by ``pgferry plan`` and logged by a run).

    Attributes:
        columns: The key columns (``None``: the job has no key).
        origin: ``job`` (named in the job), ``primary key``, ``unique index`` or ``none``.
        why: One sentence for people.
        source: The source table's declared keys (``None`` for a query source).
    """

    columns: tuple[str, ...] | None
    origin: Origin
    why: str
    source: SourceKeys | None = None

    @property
    def is_source_primary_key(self) -> bool:
        """Whether the key is exactly the source table's primary key."""
        src = self.source
        return bool(self.columns and src and src.primary and set(self.columns) == set(src.primary))


async def read_source_keys(conn: asyncpg.Connection, table: TableName) -> SourceKeys | None:
    """The primary key and the smallest usable unique index of a table (``None``: no table)."""
    if not await schema.table_exists(conn, table):
        return None
    primary = unique = None
    primary_name = unique_name = None
    for name, is_primary, cols, not_null in await conn.fetch(_KEYS, table.sql):
        if is_primary and primary is None:
            primary, primary_name = tuple(cols), name
        elif not is_primary and not_null and unique is None:
            unique, unique_name = tuple(cols), name
    return SourceKeys(table, primary, primary_name, unique, unique_name)


def _job_key(job: Job) -> tuple[str, str] | None:
    """The key the job file names, as ``(dotted key, columns)``, in ``read_key`` order."""
    inc = job.incremental
    if inc is not None and inc.key:
        return "incremental.key", ", ".join(inc.key)
    if job.source.key:
        return "source.key", ", ".join(job.source.key)
    if job.target.key:
        return "target.key", ", ".join(job.target.key)
    return None


def choose_key(job: Job, found: SourceKeys | None) -> KeyChoice:
    """Decide the key of ``job`` from the job file and the source table's declared keys."""
    named = _job_key(job)
    if named is not None:
        where, _ = named
        return KeyChoice(tuple(job.read_key or ()), "job", f"{where} in the job", found)
    if found is not None and found.primary:
        return KeyChoice(
            found.primary,
            "primary key",
            f"the primary key {found.primary_name} of source table {found.table}",
            found,
        )
    if found is not None and found.unique:
        return KeyChoice(
            found.unique,
            "unique index",
            f"unique index {found.unique_name} on NOT NULL columns of source table "
            f"{found.table} (it has no primary key)",
            found,
        )
    if job.source.table is None:
        why = "a query source declares no key; set source.key"
    else:
        why = (
            f"source table {job.source.table} has no primary key and no unique index on NOT "
            "NULL columns; set source.key"
        )
    return KeyChoice(None, "none", why, found)


def apply_key(job: Job, choice: KeyChoice) -> Job:
    """A copy of ``job`` whose missing keys are filled in from ``choice``.

    Raises:
        ConfigError: The job needs a key (``upsert``, ``incremental``) and none was found;
            the message says what was looked for.
    """
    if choice.origin == "job" and not (job.target.mode == "upsert" and not job.target.key):
        return job
    found = choice.source
    default = found.primary or found.unique if found is not None else None
    source, target = job.source, job.target
    if not job.read_key and choice.columns:
        source = source.model_copy(update={"key": list(choice.columns)})
    if job.target.mode == "upsert" and not job.target.key:
        if not default:
            raise ConfigError(
                "mode 'upsert' needs target.key (the columns of a unique key): " + choice.why,
                job=job.name,
                stage="plan",
            )
        target = target.model_copy(update={"key": list(default)})
    if job.incremental is not None and not (job.read_key or source.key):
        raise ConfigError(
            "incremental needs a key to order rows that share a value of "
            f"{job.incremental.column!r}: set incremental.key, source.key or target.key ("
            + choice.why
            + ")",
            job=job.name,
            stage="plan",
        )
    if source is job.source and target is job.target:
        return job
    return job.model_copy(update={"source": source, "target": target})


async def resolve(conn: asyncpg.Connection, job: Job) -> tuple[Job, KeyChoice]:
    """Read the source's keys and return the job with its defaults filled in, and the choice.

    Args:
        conn: A connection to the source.
        job: The job as written.

    Raises:
        ConfigError: The job needs a key and neither the job nor the source gives one.
    """
    found = None
    if job.source.table is not None:
        found = await read_source_keys(conn, job.source.table)
    choice = choose_key(job, found)
    return apply_key(job, choice), choice


def created_primary_key(
    job: Job, choice: KeyChoice | None, incoming: Sequence[Column]
) -> tuple[str, ...]:
    """The PRIMARY KEY of a target pgferry creates: the source's, where it holds.

    Only where every key lands in the target once: ``upsert`` on exactly the source's primary
    key, and ``replace`` without a transform (a snapshot of the source). An ``append`` gets
    none: an incremental append writes a new version of a row as a new row. The key's columns
    must pass through unchanged (``NOT NULL`` in the rows).
    """
    primary = choice.source.primary if choice and choice.source else None
    if not primary:
        return ()
    mode = job.target.mode
    if mode == "upsert":
        fits = set(job.upsert_key or ()) == set(primary)
    else:
        fits = mode == "replace" and job.transform is None
    by_name = {c.name: c for c in incoming}
    if fits and all(k in by_name and by_name[k].not_null for k in primary):
        return primary
    return ()
