"""The schema step: fit an existing target to the rows about to be written, before any moves.

The rows' columns (the source's, after the transform) are compared with the target table and
every difference is listed at once. Then, by ``target.schema_changes``:

* ``evolve`` (default): a new column is added (nullable, no default: no rewrite); a type that
  PostgreSQL widens without a rewrite is widened in place (``varchar(n)`` to a longer
  ``varchar`` or ``text``; ``numeric`` to more precision at the same scale or no modifier;
  more fractional seconds); a column the rows no longer have loses its ``NOT NULL``. A type
  change that needs a rewrite (``integer`` to ``bigint``, ``text`` to ``jsonb``…) is an error
  unless ``target.allow_rewrite``: then a copy of the table with the new types is filled from
  the live one and swapped in (:mod:`pgferry.engine.sinks.replace`), keeping indexes, grants,
  comments, owner and dependent views.
* ``freeze``: any difference is an error listing all of them; nothing changes.
* ``discard``: new columns are not loaded; the target stays as it is.

Each change is its own short transaction with ``SET LOCAL lock_timeout`` (``target.lock_timeout``):
while it waits for its lock it holds up the queries that arrive after it, so it gives way after
``lock_timeout`` and tries again after a pause (with backoff), ``swap_retries`` times. A kill
leaves each change done or not done, never half done. The ledger and the watermark are not
touched: rows already loaded keep NULL in a new column.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg

from pgferry import ddl, schema, sql, views
from pgferry.engine.sinks.replace import ReplacePlan
from pgferry.errors import LoadError, SchemaError, SchemaLockError
from pgferry.schema import Column
from pgferry.spec import Job
from pgferry.sql import TableName

__all__ = ["Change", "SchemaStep", "classify", "run_locked"]

log = logging.getLogger("pgferry")

Kind = Literal["add column", "widen type", "change type", "drop not null"]


@dataclass(frozen=True)
class Change:
    """One difference between the rows and the target, and what evolving does about it.

    Attributes:
        column: The column.
        change: ``add column``, ``widen type`` (in place), ``change type`` (needs a rewrite)
            or ``drop not null`` (the rows no longer have the column).
        old: The target's type before (``None`` for a new column).
        new: The type after (``None`` for ``drop not null``).
    """

    column: str
    change: Kind
    old: str | None
    new: str | None

    @property
    def rewrite(self) -> bool:
        """Whether PostgreSQL must rewrite the table to make this change."""
        return self.change == "change type"

    def as_dict(self) -> dict[str, str | None]:
        """``{column, change, from, to}``, as :attr:`RunResult.schema_changes` lists it."""
        return {"column": self.column, "change": self.change, "from": self.old, "to": self.new}

    def __str__(self) -> str:
        if self.change == "add column":
            return f"new column {self.column!r} {self.new}"
        if self.change == "drop not null":
            return f"column {self.column!r} ({self.old} NOT NULL) is not in the rows"
        how = "needs a rewrite" if self.rewrite else "widens in place"
        return f"column {self.column!r} {self.old} -> {self.new} ({how})"


# --- Type comparison ----------------------------------------------------------------------------

_TYPE = re.compile(
    r"(?P<base>[^(\[]+?)\s*(?:\((?P<mods>[\d,\s]+)\))?(?P<rest>(?:\s[^(\[]*)?)(?P<arr>(\[\])*)"
)
_INTS = {"smallint": (0, 5), "integer": (1, 10), "bigint": (2, 19)}
_STRINGS = {"character varying", "text"}
_TIMES = {
    "timestamp without time zone",
    "timestamp with time zone",
    "time without time zone",
    "time with time zone",
}


@dataclass(frozen=True)
class _Type:
    base: str
    mods: tuple[int, ...]
    array: str

    @classmethod
    def parse(cls, text: str) -> _Type:
        m = _TYPE.fullmatch(text.strip())
        if m is None:
            return cls(text.strip(), (), "")
        base = " ".join(f"{m['base']} {m['rest']}".split())
        mods = tuple(int(x) for x in m["mods"].split(",")) if m["mods"] else ()
        return cls(base, mods, m["arr"])

    def text(self) -> str:
        """The type as ``format_type()`` prints it."""
        head = self.base
        if self.mods:
            mods = f"({','.join(map(str, self.mods))})"
            # format_type() puts the modifier after the first word of timestamp/time types.
            word, _, tail = head.partition(" ")
            timed = word in ("timestamp", "time")
            head = f"{word}{mods} {tail}".strip() if timed else head + mods
        return head + self.array


Verdict = tuple[Literal["fits", "widen", "rewrite", "unknown"], str]


def classify(incoming: str, target: str) -> Verdict:
    """Whether a target column of type ``target`` takes values of type ``incoming`` as it is.

    Returns:
        ``("fits", target)``: every value fits, nothing to change; ``("widen", new)``: the
        column must become ``new``, which PostgreSQL does without a rewrite;
        ``("rewrite", new)``: it must become ``new`` and the table be rewritten;
        ``("unknown", target)``: no rule applies: the target's assignment casts decide, as
        before schema evolution (the caller checks they exist).
    """
    if incoming == target:
        return "fits", target
    s, t = _Type.parse(incoming), _Type.parse(target)
    if s.array != t.array:
        return "unknown", target
    if s.array:
        verdict, _ = classify(_Type(s.base, s.mods, "").text(), _Type(t.base, t.mods, "").text())
        return ("fits", target) if verdict == "fits" else ("unknown", target)
    return _classify_scalar(s, t, incoming, target)


def _classify_scalar(s: _Type, t: _Type, incoming: str, target: str) -> Verdict:
    if t.base == "text" and (s.base in _STRINGS or s.base == "character"):
        return "fits", target
    if t.base == "character varying" and (s.base in _STRINGS or s.base == "character"):
        if not t.mods:
            return "fits", target
        if s.base == "text" or not s.mods:
            return "widen", incoming if s.base != "character" else "text"
        if s.mods[0] <= t.mods[0]:
            return "fits", target
        return "widen", f"character varying({s.mods[0]})"
    if t.base == "character" and s.base in _STRINGS | {"character"}:
        if s.base == "character" and s.mods and t.mods and s.mods[0] <= t.mods[0]:
            return "fits", target
        return "rewrite", incoming
    if t.base in _INTS and s.base in _INTS:
        return ("fits", target) if _INTS[s.base][0] <= _INTS[t.base][0] else ("rewrite", incoming)
    if t.base == "numeric" and (s.base in _INTS or s.base == "numeric"):
        return _numeric(s, t, incoming, target)
    if t.base in _INTS and s.base == "numeric":
        return "rewrite", incoming
    if t.base == "double precision" and s.base in ("real", "smallint", "integer"):
        return "fits", target
    if t.base == "real" and s.base == "double precision":
        return "rewrite", incoming
    if t.base in _TIMES and s.base in _TIMES:
        if s.base != t.base:
            return "rewrite", incoming
        if not t.mods or (s.mods and s.mods[0] <= t.mods[0]):
            return "fits", target
        return "widen", incoming
    return "unknown", target


def _numeric(s: _Type, t: _Type, incoming: str, target: str) -> Verdict:
    if not t.mods:
        return "fits", target
    p = t.mods[0]
    sc = t.mods[1] if len(t.mods) > 1 else 0
    if s.base in _INTS:
        digits = _INTS[s.base][1]
        return ("fits", target) if p - sc >= digits else ("widen", f"numeric({digits + sc},{sc})")
    if not s.mods:
        return "widen", "numeric"
    q = s.mods[0]
    sc2 = s.mods[1] if len(s.mods) > 1 else 0
    if sc2 <= sc:
        whole = q - sc2
        return ("fits", target) if whole <= p - sc else ("widen", f"numeric({whole + sc},{sc})")
    return "rewrite", f"numeric({max(p - sc, q - sc2) + sc2},{sc2})"


# --- The step ------------------------------------------------------------------------------------

_EXTRA = """
SELECT a.attname, a.attnotnull AND NOT a.atthasdef AND a.attidentity = ''
FROM pg_attribute a
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attgenerated = ''
"""


@dataclass
class SchemaStep:
    """The differences between the rows and an existing target, and what to do about them.

    Attributes:
        job: The job (``target.schema_changes``, ``lock_timeout``, ``allow_rewrite``…).
        table: The target table.
        changes: Every difference found, in column order.
        columns: The incoming columns that are written (``discard`` leaves new ones out).
    """

    job: Job
    table: TableName
    changes: list[Change] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)

    @classmethod
    async def decide(
        cls,
        conn: asyncpg.Connection,
        job: Job,
        table: TableName,
        incoming: Sequence[Column],
        existing: Sequence[Column],
        *,
        typed: set[str],
    ) -> SchemaStep:
        """Compare, and refuse what the job's policy does not allow, before anything changes.

        Raises:
            SchemaError: ``freeze`` and a difference; ``evolve`` and a change that needs a
                rewrite without ``allow_rewrite`` (outside ``replace``, which rebuilds the
                table anyway); ``discard`` and a ``NOT NULL`` column the rows lack.
        """
        step = cls(job, table)
        target_types = {c.name: c.type for c in existing}
        unknown: list[Column] = []
        for col in incoming:
            if col.name not in target_types:
                step.changes.append(Change(col.name, "add column", None, col.type))
                continue
            if col.name not in typed:
                continue  # a transform's inferred column: the target checks its values
            verdict, new = classify(col.type, target_types[col.name])
            if verdict == "widen":
                step.changes.append(Change(col.name, "widen type", target_types[col.name], new))
            elif verdict == "rewrite":
                step.changes.append(Change(col.name, "change type", target_types[col.name], new))
            elif verdict == "unknown":
                unknown.append(col)
        step.changes += await _unassignable(conn, unknown, target_types)
        added = {c.column for c in step.changes if c.change == "add column"}
        await schema.require_types(conn, [c for c in incoming if c.name in added])
        names = {c.name for c in incoming}
        for name, blocks in await conn.fetch(_EXTRA, table.sql):
            if name not in names and blocks:
                step.changes.append(Change(name, "drop not null", target_types[name], None))
        step._check_policy()
        step.columns = [c for c in incoming if not step._discarded(c.name)]
        return step

    def _discarded(self, name: str) -> bool:
        return self.job.target.schema_changes == "discard" and any(
            c.column == name and c.change == "add column" for c in self.changes
        )

    def _check_policy(self) -> None:
        policy, table = self.job.target.schema_changes, self.table
        if not self.changes:
            return
        listing = "; ".join(map(str, self.changes))
        if policy == "freeze":
            raise SchemaError(
                f"target table {table} differs from the rows and target.schema_changes is "
                f"'freeze': {listing}",
                column=self.changes[0].column,
            )
        if policy == "discard":
            blocking = [c for c in self.changes if c.change == "drop not null"]
            if blocking:
                raise SchemaError(
                    f"target table {table} has NOT NULL columns the rows no longer have, and "
                    "target.schema_changes is 'discard' (the target stays as it is): "
                    + "; ".join(map(str, blocking)),
                    column=blocking[0].column,
                )
            return
        rewrites = [c for c in self.changes if c.rewrite]
        if rewrites and not self.job.target.allow_rewrite and self.job.target.mode != "replace":
            raise SchemaError(
                f"target table {table}: changing the type of "
                + "; ".join(f"column {c.column!r} from {c.old} to {c.new}" for c in rewrites)
                + " needs a rewrite of the table; set target.allow_rewrite: true to rebuild "
                "it (a copy is filled and swapped in), or change the target yourself",
                column=rewrites[0].column,
            )

    @property
    def to_apply(self) -> list[Change]:
        """The changes ``evolve`` makes (none for ``discard``; ``freeze`` had none to make)."""
        if self.job.target.schema_changes != "evolve":
            return []
        return list(self.changes)

    async def apply(self, conn: asyncpg.Connection, table: TableName | None = None) -> list[Change]:
        """Make the changes, each in its own lock-bounded transaction: new columns first (they
        lock the table alone), then widenings (which may also lock dependent views), then
        ``DROP NOT NULL``; rewrites last, together (one copy of the table).

        Args:
            conn: The target connection (not inside a transaction).
            table: Where to make them (default the target; the shadow of a ``replace``).

        Returns:
            The changes made, for :attr:`RunResult.schema_changes`.
        """
        where = table or self.table
        done: list[Change] = []
        order: dict[str, int] = {"add column": 0, "widen type": 1, "drop not null": 2}
        pending = sorted(self.to_apply, key=lambda c: order.get(c.change, 3))
        for change in pending:
            if change.rewrite:
                continue
            await run_locked(conn, self.job, where, str(change), _statement(where, change))
            log.warning("job %s: %s: %s", self.job.name, where, change)
            done.append(change)
        rewrites = [c for c in pending if c.rewrite]
        if rewrites:
            if where != self.table:  # the empty shadow of a replace: altered directly
                for change in rewrites:
                    await run_locked(conn, self.job, where, str(change), _statement(where, change))
            else:
                await run_locked(
                    conn,
                    self.job,
                    where,
                    "rewrite " + ", ".join(c.column for c in rewrites),
                    lambda c: _rewrite(c, where, rewrites),
                )
            log.warning("job %s: %s: %s", self.job.name, where, "; ".join(map(str, rewrites)))
            done += rewrites
        return done


async def _unassignable(
    conn: asyncpg.Connection, columns: Sequence[Column], target_types: dict[str, str]
) -> list[Change]:
    """Type changes no rule knows whose values the target cannot take by assignment."""
    if not columns:
        return []
    rows = await conn.fetch(
        schema.COMPATIBLE, [c.type for c in columns], [target_types[c.name] for c in columns]
    )
    return [
        Change(col.name, "change type", target_types[col.name], col.type)
        for col, row in zip(columns, rows, strict=True)
        if not row[1]
    ]


def _statement(table: TableName, change: Change) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    async def run(conn: asyncpg.Connection) -> None:
        if change.change == "add column":
            assert change.new is not None
            await conn.execute(ddl.add_column(table, change.column, change.new))
        elif change.change == "drop not null":
            await conn.execute(ddl.drop_not_null(table, change.column))
        else:
            assert change.new is not None
            saved = await views.save_dependent_views(conn, table, [change.column])
            await views.drop_views(conn, saved)
            await conn.execute(
                ddl.alter_column_type(table, change.column, change.new, using=change.rewrite)
            )
            await views.restore_views(conn, saved)

    return run


async def _rewrite(conn: asyncpg.Connection, table: TableName, changes: Sequence[Change]) -> None:
    """Fill a copy with the new types from the live table and swap it in, in one transaction.

    ``SHARE`` mode lets readers go on during the copy and holds writers, whose rows would
    otherwise be lost with the old table; readers see the old table until the swap commits.
    """
    await conn.execute(ddl.lock_table_share(table))
    shadow = ReplacePlan(table, existed=True)
    await shadow.create_shadow_like_target(conn)
    casts = {c.column: c.new for c in changes if c.new is not None}
    for column, new in casts.items():
        await conn.execute(ddl.alter_column_type(shadow.shadow, column, new, using=True))
    columns = [c.name for c in await schema.describe_table(conn, table) or []]
    await conn.execute(ddl.copy_table_rows(shadow.shadow, table, columns, casts))
    await shadow.swap_in_transaction(conn)


def _blocker_text(blockers: Sequence[tuple[int, str, float | None]]) -> str:
    if not blockers:
        return "no session holds a lock on it now"
    parts = []
    for pid, app, open_s in blockers:
        age = f"{open_s:.1f} s" if open_s is not None else "no open transaction"
        parts.append(f"pid {pid} (application_name {app!r}, transaction open {age})")
    return "held by " + ", ".join(parts)


async def run_locked(
    conn: asyncpg.Connection,
    job: Job,
    table: TableName,
    what: str,
    statements: Callable[[asyncpg.Connection], Awaitable[Any]],
) -> None:
    """Run ``statements`` in one transaction whose every statement waits at most
    ``target.lock_timeout`` for a lock; retry with backoff, ``swap_retries`` times.

    With ``target.terminate_blockers_after``, retries go on until the change has been blocked
    that long, then the sessions holding locks on ``table`` are terminated and it tries again.

    Raises:
        SchemaLockError: The lock was never granted; names the sessions that held it.
        LoadError: The change failed for another reason (the target is unchanged).
    """
    target = job.target
    timeout_ms = f"{max(1, int(target.lock_timeout * 1000))}ms"
    started = time.monotonic()
    attempt = 0
    terminated = False
    while True:
        attempt += 1
        try:
            async with conn.transaction():
                await conn.execute(sql.set_lock_timeout(), timeout_ms)
                await statements(conn)
            return
        except asyncpg.LockNotAvailableError as exc:
            blockers = [(r[0], r[1], r[2]) for r in await conn.fetch(ddl.BLOCKERS, table.sql)]
            blocked = time.monotonic() - started
            limit = target.terminate_blockers_after
            if limit is not None and not terminated and blocked >= limit:
                for pid, app, _ in blockers:
                    log.warning(
                        "job %s: %s blocked for %.0f s: terminating pid %d (%s)",
                        job.name,
                        what,
                        blocked,
                        pid,
                        app,
                    )
                    await conn.fetchval(ddl.TERMINATE, pid)
                terminated, attempt = True, 0
                continue
            if attempt >= job.swap_retries and (limit is None or terminated):
                raise SchemaLockError(
                    f"{what} on {table}: lock not granted within {target.lock_timeout:g} s "
                    f"in {attempt} attempts over {blocked:.1f} s; {_blocker_text(blockers)}",
                    job=job.name,
                    blockers=blockers,
                ) from exc
            delay = min(10.0, target.lock_timeout * 2 ** (attempt - 1)) * (0.5 + random.random())
            if limit is not None and not terminated:
                delay = max(0.0, min(delay, limit - blocked))
            log.warning(
                "job %s: %s: lock on %s not granted in %g s (%s); retrying in %.1f s",
                job.name,
                what,
                table,
                target.lock_timeout,
                _blocker_text(blockers),
                delay,
            )
            await asyncio.sleep(delay)
        except SchemaError:
            raise
        except asyncpg.PostgresError as exc:
            raise LoadError(
                f"{what} on {table} failed, the table is unchanged: {type(exc).__name__}: {exc}",
                job=job.name,
            ) from exc
