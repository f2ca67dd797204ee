"""Introspection, type mapping, and creating or checking target tables."""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from pgferry import sql
from pgferry.connection import Interval
from pgferry.errors import ConfigError, SchemaError
from pgferry.sql import TableName

__all__ = ["INTEGER_TYPES", "Column", "describe_query", "describe_table", "infer_type"]

INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})
"""Integer column types: keys of these types split into ranges by min and max."""


@dataclass(frozen=True)
class Column:
    """A column as the server describes it.

    Attributes:
        name: Column name.
        type: The exact type as ``format_type()`` prints it (``numeric(38,10)``, ``text[]``).
        not_null: Declared ``NOT NULL`` (tables only; a query's columns never are).
        comment: The column's comment, if any (tables only).
    """

    name: str
    type: str
    not_null: bool = False
    comment: str | None = None


_DESCRIBE_TABLE = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       col_description(a.attrelid, a.attnum)
FROM pg_attribute a
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attgenerated = ''
ORDER BY a.attnum
"""

_RELATION_EXISTS = """
SELECT c.oid::regclass::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND ($1::text IS NULL AND pg_table_is_visible(c.oid) OR n.nspname = $1)
"""


async def table_exists(conn: asyncpg.Connection, table: TableName) -> bool:
    """True if the table (or view) exists, resolving an unqualified name by search_path."""
    found = await conn.fetchval(_RELATION_EXISTS, table.schema, table.name)
    return found is not None


async def describe_table(conn: asyncpg.Connection, table: TableName) -> list[Column] | None:
    """The table's columns with exact types, or ``None`` if it does not exist.

    Generated columns are left out: nothing can be written to them.
    """
    if not await table_exists(conn, table):
        return None
    rows = await conn.fetch(_DESCRIBE_TABLE, table.sql)
    return [Column(r[0], r[1], r[2], r[3]) for r in rows]


async def table_comment(conn: asyncpg.Connection, table: TableName) -> str | None:
    """The table's comment, if it has one."""
    value = await conn.fetchval("SELECT obj_description($1::regclass, 'pg_class')", table.sql)
    return str(value) if value is not None else None


async def describe_query(conn: asyncpg.Connection, query: str) -> list[Column]:
    """The columns a query returns, with exact types including modifiers.

    The wire protocol's row description carries type modifiers but asyncpg does not expose
    them, so the query is wrapped in a temporary view inside a rolled-back transaction and the
    view's catalog entry is read. Where that is not allowed (a hot standby, a query with
    parameters), types fall back to the unmodified type names.
    """
    try:
        async with conn.transaction():
            await conn.execute(sql.create_probe_view(query))
            rows = await conn.fetch(_DESCRIBE_TABLE, "pgferry_probe")
            columns = [Column(r[0], r[1]) for r in rows]
            raise _Rollback(columns)
    except _Rollback as done:
        return done.columns
    except asyncpg.PostgresError:
        pass
    stmt = await conn.prepare(query)
    attrs = stmt.get_attributes()
    oids = [a.type.oid for a in attrs]
    names = await conn.fetch("SELECT format_type(o, NULL) FROM unnest($1::oid[]) AS o", oids)
    return [Column(a.name, n[0]) for a, n in zip(attrs, names, strict=True)]


class _Rollback(Exception):
    def __init__(self, columns: list[Column]) -> None:
        super().__init__("rollback")
        self.columns = columns


async def estimate_rows(conn: asyncpg.Connection, table: TableName) -> int | None:
    """The planner's row estimate for a table (``pg_class.reltuples``), or ``None``."""
    value = await conn.fetchval(
        "SELECT reltuples::bigint FROM pg_class WHERE oid = $1::regclass", table.sql
    )
    return int(value) if value is not None and value >= 0 else None


async def table_size(conn: asyncpg.Connection, table: TableName) -> int:
    """Heap plus TOAST size of a table in bytes (0 if it does not exist)."""
    value = await conn.fetchval("SELECT pg_table_size(to_regclass($1))", table.sql)
    return int(value or 0)


def check_unique_names(columns: Sequence[Column], what: str) -> None:
    """Raise if two columns share a name (COPY would need them told apart)."""
    seen: set[str] = set()
    for col in columns:
        if col.name in seen:
            raise ConfigError(f"{what} returns two columns named {col.name!r}", column=col.name)
        seen.add(col.name)


# --- Types of new columns -------------------------------------------------------------------


def infer_type(value: Any) -> str | None:
    """The PostgreSQL type for a Python value a transform produced, or ``None`` if unknown."""
    if isinstance(value, bool):  # before int: bool is an int
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, decimal.Decimal):
        return "numeric"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dt.datetime):
        return "timestamp with time zone" if value.tzinfo is not None else "timestamp"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, dt.time):
        return "time with time zone" if value.tzinfo is not None else "time"
    if isinstance(value, Interval | dt.timedelta):
        return "interval"
    if isinstance(value, dict | list):
        return "jsonb"
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytea"
    if isinstance(value, uuid.UUID):
        return "uuid"
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return "cidr"
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return "inet"
    # asyncpg's own UUID type is not a uuid.UUID subclass.
    if type(value).__name__ == "UUID":
        return "uuid"
    return None


def output_columns(
    names: Sequence[str],
    rows: Sequence[Sequence[Any]],
    source: Sequence[Column],
    declared: Mapping[str, str],
) -> list[Column]:
    """Types for the columns of transformed rows, for creating the target table.

    Declared types (``target.columns``) win; columns named like a source column keep its exact
    type; the rest take the type of their first non-null value.

    Raises:
        SchemaError: A column's type cannot be told (all values null or an unknown Python
            type); the message asks for it in ``target.columns``.
    """
    by_name = {c.name: c.type for c in source}
    out: list[Column] = []
    for i, name in enumerate(names):
        if name in declared:
            out.append(Column(name, declared[name]))
            continue
        if name in by_name:
            # Pass-through: the exact type, NOT NULL and comment follow the source column.
            out.append(next(c for c in source if c.name == name))
            continue
        sample = next((row[i] for row in rows if row[i] is not None), None)
        type_name = infer_type(sample) if sample is not None else None
        if type_name is None:
            why = (
                "every value in the first batch is NULL"
                if sample is None
                else f"values of Python type {type(sample).__name__} have no default mapping"
            )
            raise SchemaError(
                f"cannot tell the type of new column {name!r}: {why}; declare it under "
                "target.columns",
                column=name,
            )
        out.append(Column(name, type_name))
    return out


_BASE_TYPES = """
SELECT coalesce((
    WITH RECURSIVE chain(oid, typtype, typbasetype, typtypmod) AS (
        SELECT t.oid, t.typtype, t.typbasetype, t.typtypmod
        FROM pg_type t WHERE t.oid = to_regtype(u.name)
        UNION ALL
        SELECT t.oid, t.typtype, t.typbasetype, t.typtypmod
        FROM pg_type t JOIN chain c ON t.oid = c.typbasetype WHERE c.typtype = 'd'
    )
    SELECT format_type(oid, NULL) FROM chain WHERE typtype <> 'd'), u.name)
FROM unnest($1::text[]) WITH ORDINALITY AS u(name, n)
ORDER BY u.n
"""


async def base_types(conn: asyncpg.Connection, types: Sequence[str]) -> list[str]:
    """Each type (``format_type`` text) with its domains peeled off, at any depth, without a
    modifier (a domain over a domain over ``integer[]`` is ``integer[]``); a type the server
    does not know is returned as it is."""
    return [r[0] for r in await conn.fetch(_BASE_TYPES, list(types))]


async def require_types(conn: asyncpg.Connection, columns: Sequence[Column]) -> None:
    """Refuse, naming the column, a column whose type the target database does not have (a
    domain, an enum or a composite type of the source's, an extension's type).

    Raises:
        SchemaError: The first such column, with what to do about it.
    """
    names = [c.type for c in columns]
    found = await conn.fetch(
        "SELECT n, to_regtype(t) IS NOT NULL FROM unnest($1::text[]) WITH ORDINALITY x(t, n)",
        names,
    )
    for n, exists in found:
        if not exists:
            col = columns[n - 1]
            raise SchemaError(
                f"column {col.name!r} has type {col.type}, which the target "
                "database does not have: create the type there first (the same CREATE DOMAIN, "
                "CREATE TYPE or CREATE EXTENSION as in the source), or cast the column in "
                "source.query (with a transform, target.columns may declare its type)",
                column=col.name,
            )


async def create_table(
    conn: asyncpg.Connection,
    table: TableName,
    columns: Sequence[Column],
    *,
    primary_key: Sequence[str] = (),
    comment: str | None = None,
) -> None:
    """Create ``table`` with ``columns`` (and its schema, if that is missing too).

    Columns keep their ``NOT NULL`` and comments; ``primary_key`` becomes the table's primary
    key, ``comment`` its comment. Defaults, sequences, foreign keys, triggers and policies
    are never copied (``docs/schema-evolution.md`` says why).
    """
    await require_types(conn, columns)
    if table.schema is not None:
        exists = await conn.fetchval(
            "SELECT to_regnamespace($1) IS NOT NULL", sql.quote_ident(table.schema)
        )
        if not exists:
            await conn.execute(sql.create_schema(table.schema))
    await conn.execute(
        sql.create_table(
            table,
            [(c.name, c.type) for c in columns],
            not_null=[c.name for c in columns if c.not_null],
            primary_key=primary_key,
        )
    )
    if comment is not None:
        await conn.execute(await conn.fetchval(sql.FORMAT_COMMENT_ON_TABLE, table.sql, comment))
    for col in columns:
        if col.comment is not None:
            await conn.execute(
                await conn.fetchval(sql.FORMAT_COMMENT_ON_COLUMN, table.sql, col.name, col.comment)
            )


_COMPATIBLE = """
WITH p AS (
  SELECT n, to_regtype(s)::oid AS s, to_regtype(t)::oid AS t
  FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS x(s, t, n)
)
SELECT p.n, p.s IS NOT NULL AND (
    p.s = p.t
    OR EXISTS (SELECT 1 FROM pg_cast c
               WHERE c.castsource = p.s AND c.casttarget = p.t AND c.castcontext IN ('a', 'i'))
    OR EXISTS (SELECT 1 FROM pg_type st JOIN pg_type tt ON tt.oid = p.t
               WHERE st.oid = p.s AND st.typelem <> 0 AND tt.typelem <> 0
                 AND st.typcategory = 'A' AND tt.typcategory = 'A'
                 AND (st.typelem = tt.typelem OR EXISTS (
                      SELECT 1 FROM pg_cast c WHERE c.castsource = st.typelem
                        AND c.casttarget = tt.typelem AND c.castcontext IN ('a', 'i'))))
  )
  , p.s = p.t, format_type(p.t, NULL)
FROM p ORDER BY p.n
"""


COMPATIBLE = _COMPATIBLE
"""Per pair of ``$1`` incoming and ``$2`` target types: ``(n, assignable, same, base type)``."""


async def match_target(
    conn: asyncpg.Connection,
    table: TableName,
    incoming: Sequence[Column],
    existing: Sequence[Column],
    *,
    typed: set[str],
) -> dict[str, str | None]:
    """Check incoming columns against an existing target table, before any row moves.

    Args:
        conn: A connection to the target.
        table: The target, for messages.
        incoming: Columns about to be written.
        existing: The target's columns.
        typed: Names of incoming columns whose type is known (pass-through or declared);
            others are checked by the target when their values arrive.

    Returns:
        For every incoming column, the target type to cast to when the types differ, else
        ``None``. The cast names the type without its modifier (``varchar``, not
        ``varchar(4)``): an explicit cast would truncate or round silently, while the
        target applies the modifier itself and refuses a value that does not fit.

    Raises:
        SchemaError: A column is missing from the target, or its type cannot be assigned
            to the target column's type.
    """
    target_types = {c.name: c.type for c in existing}
    missing = [c.name for c in incoming if c.name not in target_types]
    if missing:
        raise SchemaError(
            f"target table {table} has no column {missing[0]!r} "
            f"(missing: {', '.join(missing)}; it has: {', '.join(target_types)})",
            column=missing[0],
        )
    casts: dict[str, str | None] = {c.name: None for c in incoming}
    differing = [c for c in incoming if c.name in typed and c.type != target_types[c.name]]
    if not differing:
        return casts
    rows = await conn.fetch(
        _COMPATIBLE, [c.type for c in differing], [target_types[c.name] for c in differing]
    )
    for col, row in zip(differing, rows, strict=True):
        if not row[1]:
            raise SchemaError(
                f"column {col.name!r} of target table {table} has type "
                f"{target_types[col.name]}, which cannot hold the incoming {col.type}",
                column=col.name,
            )
        if not row[2]:  # same type, other modifier: no cast, the target checks the modifier
            casts[col.name] = row[3]
    return casts
