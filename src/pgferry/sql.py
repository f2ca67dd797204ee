"""Identifier quoting and SQL text: the module that composes SQL (with :mod:`pgferry.ddl`,
the schema step's and views' DDL, built from the same quoting).

Every identifier that reaches SQL goes through :func:`quote_ident`; every value is a bind
parameter (``$1``) or travels through COPY. Type names that appear in SQL text come from the
server's own ``format_type()`` or from the fixed inference table in :mod:`pgferry.schema`, and are
checked by :func:`check_type_name` before use.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from pgferry.errors import ConfigError

__all__ = [
    "TableName",
    "check_type_name",
    "quote_ident",
]

_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
# A type name as format_type() prints it: optionally schema-qualified (quoted) words, one
# modifier list of integers, more words, array brackets: `numeric(38,10)`, `"My Type"[]`,
# `timestamp(3) with time zone`, `character varying(20)[]`. Nothing else can get through.
_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_TYPE_NAME = re.compile(
    rf"{_IDENT}(?:\.{_IDENT})?(?:\s+[A-Za-z_]+)*"
    r"(?:\s*\(\s*-?\d+\s*(?:,\s*-?\d+\s*)?\))?"
    r"(?:\s+[A-Za-z_]+)*"
    r"(?:\s*\[\s*\d*\s*\])*"
)
_MAX_IDENT = 63  # NAMEDATALEN - 1: PostgreSQL silently truncates longer names.


def quote_ident(name: str) -> str:
    """Quote one identifier for SQL, whatever characters it holds.

    Args:
        name: The identifier exactly as stored in the catalog (no folding is applied).

    Returns:
        The name in double quotes with embedded quotes doubled.

    Raises:
        ConfigError: If the name is empty, contains a NUL byte or is longer than PostgreSQL
            keeps (63 bytes), which would otherwise be truncated silently.
    """
    if not name:
        raise ConfigError("an identifier cannot be empty")
    if "\x00" in name:
        raise ConfigError(f"identifier {name!r} contains a NUL byte")
    if len(name.encode()) > _MAX_IDENT:
        raise ConfigError(f"identifier {name!r} is longer than PostgreSQL's 63-byte limit")
    return '"' + name.replace('"', '""') + '"'


def quote_columns(columns: Iterable[str]) -> str:
    """A comma-separated list of quoted column names."""
    return ", ".join(quote_ident(c) for c in columns)


def check_type_name(type_name: str) -> str:
    """Return ``type_name`` if it looks like a PostgreSQL type expression, else raise.

    Type names come from ``format_type()`` or from the job's ``target.columns``; the latter is
    user input, so it is checked before it is written into DDL.
    """
    text = type_name.strip()
    if not _TYPE_NAME.fullmatch(text):
        raise ConfigError(f"{type_name!r} is not a valid PostgreSQL type name")
    return text


def _split_qualified(text: str) -> list[str]:
    """Split ``a.b`` into parts, honouring double quotes and folding bare names to lower case."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == '"':
            j = i + 1
            buf: list[str] = []
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise ConfigError(f"unterminated quoted identifier in {text!r}")
                buf.append(text[j:k])
                if k + 1 < n and text[k + 1] == '"':
                    buf.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            parts.append("".join(buf))
        else:
            m = _BARE.match(text, i)
            if not m:
                raise ConfigError(
                    f"cannot parse table name {text!r}: write names with other characters in "
                    'double quotes (e.g. "My Table"), or give the parts as a list'
                )
            # PostgreSQL folds unquoted identifiers to lower case; so do we.
            parts.append(m.group(0).lower())
            i = m.end()
        while i < n and text[i].isspace():
            i += 1
        if i == n:
            return parts
        if text[i] != ".":
            raise ConfigError(f"unexpected {text[i]!r} in table name {text!r}")
        i += 1


@dataclass(frozen=True, order=True)
class TableName:
    """A possibly schema-qualified table name, stored unquoted exactly as in the catalog.

    Attributes:
        schema: The schema, or ``None`` to follow the connection's ``search_path``.
        name: The table name.
    """

    schema: str | None
    name: str

    @classmethod
    def parse(cls, value: str | Sequence[str] | TableName) -> TableName:
        """Build a table name from SQL text or from its parts.

        ``"public.orders"`` and ``'"Mixed Case"."we""ird; --"'`` follow SQL syntax: bare names
        are folded to lower case, quoted names are taken as written. A list or tuple
        ``["Mixed Case", 'we"ird; --']`` is taken literally, with no folding or unquoting.

        Raises:
            ConfigError: If the text is not a valid one- or two-part name.
        """
        if isinstance(value, TableName):
            return value
        parts = _split_qualified(value) if isinstance(value, str) else [str(p) for p in value]
        if len(parts) == 1:
            table = cls(None, parts[0])
        elif len(parts) == 2:
            table = cls(parts[0], parts[1])
        else:
            raise ConfigError(f"table name {value!r} must have one or two parts (schema.table)")
        table.sql  # noqa: B018 - validates both parts (empty, NUL, too long)
        return table

    @property
    def sql(self) -> str:
        """The quoted name, ready for SQL text."""
        if self.schema is None:
            return quote_ident(self.name)
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    def sibling(self, name: str) -> TableName:
        """A table with another name in the same schema."""
        return TableName(self.schema, name)

    def __str__(self) -> str:
        def show(part: str) -> str:
            plain = _BARE.fullmatch(part) and part == part.lower()
            return part if plain else quote_ident(part)

        return show(self.name) if self.schema is None else f"{show(self.schema)}.{show(self.name)}"


def in_schema(template: str, schema: str) -> str:
    """Fill ``{s}`` in a fixed statement with the quoted schema name (the state tables)."""
    return template.format(s=quote_ident(schema))


# --- Statements ----------------------------------------------------------------------------


def select_from_table(table: TableName, columns: Sequence[str]) -> str:
    """``SELECT "a", "b" FROM "s"."t"``."""
    return f"SELECT {quote_columns(columns)} FROM {table.sql}"


def select_with_casts(query: str, columns: Sequence[tuple[str, str | None]]) -> str:
    """Wrap ``query`` so that selected columns are cast to the target's types where needed.

    Binary COPY requires the wire format of each column to match the target column's type
    exactly (an ``int4`` cannot be read into an ``int8`` column), so the binary pipe casts on
    the source side.
    """
    items = []
    for name, cast in columns:
        col = quote_ident(name)
        items.append(f"{col}::{check_type_name(cast)} AS {col}" if cast else col)
    return f"SELECT {', '.join(items)} FROM ({query}) AS pgferry_src"


def create_table(
    table: TableName,
    columns: Sequence[tuple[str, str]],
    *,
    not_null: Collection[str] = (),
    primary_key: Sequence[str] = (),
) -> str:
    """``CREATE TABLE`` with the given (name, type) columns, NOT NULL ones and a primary key."""
    items = [
        f"{quote_ident(n)} {check_type_name(t)}" + (" NOT NULL" if n in not_null else "")
        for n, t in columns
    ]
    if primary_key:
        items.append(f"PRIMARY KEY ({quote_columns(primary_key)})")
    return f"CREATE TABLE {table.sql} ({', '.join(items)})"


def create_table_like(table: TableName, like: TableName) -> str:
    """A table with the same columns, defaults, constraints, indexes and column comments."""
    return f"CREATE TABLE {table.sql} (LIKE {like.sql} INCLUDING ALL)"


def drop_table(table: TableName) -> str:
    """``DROP TABLE IF EXISTS`` (no CASCADE: dependent objects make it fail, never vanish)."""
    return f"DROP TABLE IF EXISTS {table.sql}"


def rename_table(table: TableName, new_name: str) -> str:
    """``ALTER TABLE … RENAME TO …``."""
    return f"ALTER TABLE {table.sql} RENAME TO {quote_ident(new_name)}"


def rename_index(schema: str, index: str, new_name: str) -> str:
    """``ALTER INDEX … RENAME TO …``."""
    return f"ALTER INDEX {TableName(schema, index).sql} RENAME TO {quote_ident(new_name)}"


def rename_constraint(table: TableName, constraint: str, new_name: str) -> str:
    """``ALTER TABLE … RENAME CONSTRAINT … TO …``."""
    return (
        f"ALTER TABLE {table.sql} RENAME CONSTRAINT {quote_ident(constraint)} "
        f"TO {quote_ident(new_name)}"
    )


def lock_table(table: TableName) -> str:
    """``LOCK TABLE … IN ACCESS EXCLUSIVE MODE``."""
    return f"LOCK TABLE {table.sql} IN ACCESS EXCLUSIVE MODE"


def grant(table: TableName, privilege: str, grantee: str | None, with_grant: bool) -> str:
    """``GRANT privilege ON table TO grantee``; ``grantee=None`` means PUBLIC."""
    return grant_on(table.sql, privilege, grantee, with_grant)


def grant_on(relation: str, privilege: str, grantee: str | None, with_grant: bool) -> str:
    """:func:`grant` on a relation named by quoted text (``regclass`` output of the server)."""
    allowed = {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "REFERENCES",
        "TRIGGER",
        "MAINTAIN",
    }
    if privilege not in allowed:
        raise ConfigError(f"unexpected privilege {privilege!r}")
    who = "PUBLIC" if grantee is None else quote_ident(grantee)
    suffix = " WITH GRANT OPTION" if with_grant else ""
    return f"GRANT {privilege} ON {relation} TO {who}{suffix}"


def replace_view(view: str, definition: str) -> str:
    """``CREATE OR REPLACE VIEW``; both parts are server output (``regclass`` text and
    ``pg_get_viewdef``), not user input."""
    return f"CREATE OR REPLACE VIEW {view} AS {definition}"


def create_probe_view(query: str) -> str:
    """A temporary view over the user's source query, to read its exact column types."""
    return f"CREATE TEMPORARY VIEW pgferry_probe AS {query}"


def cast_parameter(type_name: str) -> str:
    """``SELECT $1::type``: makes the driver encode a value with that type's encoder."""
    return f"SELECT $1::{check_type_name(type_name)}"


def set_lock_timeout() -> str:
    """Bind-parameter form of ``SET LOCAL lock_timeout`` (``set_config`` takes values)."""
    return "SELECT set_config('lock_timeout', $1, true)"


# Values bound on the server side: COMMENT and CREATE VIEW take no bind parameters, so the text
# is produced by format() with %I / %L from bound values and executed as the result.
FORMAT_COMMENT_ON_TABLE = "SELECT format('COMMENT ON TABLE %s IS %L', $1::text, $2::text)"
FORMAT_COMMENT_ON_COLUMN = (
    "SELECT format('COMMENT ON COLUMN %s.%I IS %L', $1::text, $2::text, $3::text)"
)
FORMAT_OWNER = "SELECT format('ALTER TABLE %s OWNER TO %I', $1::text, $2::text)"


# --- Reading in position order ----------------------------------------------------------------


def typed_param(n: int, type_name: str) -> str:
    """``$n::text::type``: a value bound as text and converted by the server, exactly."""
    return f"${n}::text::{check_type_name(type_name)}"


def ordered_source(
    base: str,
    columns: Sequence[str],
    *,
    where: Sequence[str],
    order_by: Sequence[str],
    probe: str | None = None,
) -> str:
    """``SELECT cols[, probe] FROM (base) AS pgferry_src [WHERE …] [ORDER BY …]``.

    ``where`` items (:func:`row_after`, :func:`range_filter`) and ``probe``, one more column
    (:func:`pgferry.sql_bounds.array_bounds_probe`), are SQL built by pgferry, with bind
    parameters.
    """
    select = quote_columns(columns)
    if probe is not None:
        select += f", {probe}"
    text = f"SELECT {select} FROM ({base}) AS pgferry_src"
    if where:
        text += " WHERE " + " AND ".join(f"({w})" for w in where)
    if order_by:
        text += f" ORDER BY {quote_columns(order_by)}"
    return text


def row_after(columns: Sequence[str], types: Sequence[str], first_param: int) -> str:
    """``("c", "k") > ($1::text::T, $2::text::K)``: strictly after a position."""
    params = [typed_param(first_param + i, t) for i, t in enumerate(types)]
    if len(columns) == 1:
        return f"{quote_ident(columns[0])} > {params[0]}"
    return f"({quote_columns(columns)}) > ({', '.join(params)})"


def at_least(column: str, type_name: str, param: int) -> str:
    """``"c" >= $n::text::T``."""
    return f"{quote_ident(column)} >= {typed_param(param, type_name)}"


def at_least_minus_interval(column: str, type_name: str, param: int) -> str:
    """``"c" >= $n::text::T - $m::interval`` (incremental lookback)."""
    return (
        f"{quote_ident(column)} >= {typed_param(param, type_name)} - ${param + 1}::text::interval"
    )


def range_filter(column: str, type_name: str, lower: int | None, upper: int | None) -> str:
    """``lower <= "c" < upper`` with bound parameters (either side may be absent).

    A range with no lower bound also holds the rows where the column is NULL, so that a set
    of ranges covering all values covers every row.
    """
    col = quote_ident(column)
    low = f"{col} >= {typed_param(lower, type_name)}" if lower is not None else None
    high = f"{col} < {typed_param(upper, type_name)}" if upper is not None else None
    if low and high:
        return f"{low} AND {high}"
    if high:
        return f"{high} OR {col} IS NULL"
    return low or "true"


def last_position(query: str, columns: Sequence[str]) -> str:
    """The greatest position of a query's rows, as text: ``(c, k…)`` descending, first row."""
    texts = ", ".join(f"{quote_ident(c)}::text" for c in columns)
    order = ", ".join(f"{quote_ident(c)} DESC" for c in columns)
    return f"SELECT {texts} FROM ({query}) AS pgferry_last ORDER BY {order} LIMIT 1"


# --- Upsert -------------------------------------------------------------------------------------

STAGE_ORDER_COLUMN = "_pgferry_ord"


def create_stage(stage: str, like: TableName) -> str:
    """A temporary staging table with the target's columns and an arrival-order column."""
    return (
        f"CREATE TEMPORARY TABLE {quote_ident(stage)} (LIKE {like.sql} INCLUDING DEFAULTS, "
        f"{quote_ident(STAGE_ORDER_COLUMN)} bigint GENERATED ALWAYS AS IDENTITY)"
    )


def truncate(table: str) -> str:
    """``TRUNCATE`` a (temporary) table by its plain name."""
    return f"TRUNCATE {quote_ident(table)}"


def merge_stage(target: TableName, stage: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """Insert or update from the stage; the last version of a key in arrival order wins.

    Unchanged rows are not rewritten (``IS DISTINCT FROM``), so a rerun writes nothing.
    """
    cols = quote_columns(columns)
    keys = quote_columns(key)
    others = [c for c in columns if c not in key]
    order = quote_ident(STAGE_ORDER_COLUMN)
    select = (
        f"SELECT DISTINCT ON ({keys}) {cols} FROM {quote_ident(stage)} "
        f"ORDER BY {keys}, {order} DESC"
    )
    head = f"INSERT INTO {target.sql} AS t ({cols}) {select} ON CONFLICT ({keys}) DO "
    if not others:
        return head + "NOTHING"
    sets = ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in others)
    old = ", ".join(f"t.{quote_ident(c)}" for c in others)
    new = ", ".join(f"EXCLUDED.{quote_ident(c)}" for c in others)
    return f"{head}UPDATE SET {sets} WHERE ROW({old}) IS DISTINCT FROM ROW({new})"


def create_unique_index(table: TableName, key: Sequence[str]) -> str:
    """A unique index on the key columns (name chosen by the server)."""
    return f"CREATE UNIQUE INDEX ON {table.sql} ({quote_columns(key)})"


def delete_range(
    table: TableName, column: str, type_name: str, lower: int | None, upper: int | None
) -> str:
    """``DELETE FROM t WHERE lower <= c < upper`` (a partition being reloaded)."""
    return f"DELETE FROM {table.sql} WHERE {range_filter(column, type_name, lower, upper)}"


def create_keys_table(name: str, key: Sequence[tuple[str, str]]) -> str:
    """A temporary table of source keys, for ``sync_deletes``."""
    cols = ", ".join(f"{quote_ident(n)} {check_type_name(t)}" for n, t in key)
    return f"CREATE TEMPORARY TABLE {quote_ident(name)} ({cols})"


def delete_missing_keys(target: TableName, keys_table: str, key: Sequence[str]) -> str:
    """Delete target rows whose key is not in the keys table."""
    match = " AND ".join(f"k.{quote_ident(c)} = t.{quote_ident(c)}" for c in key)
    return (
        f"DELETE FROM {target.sql} AS t WHERE NOT EXISTS "
        f"(SELECT 1 FROM {quote_ident(keys_table)} AS k WHERE {match})"
    )


UNIQUE_INDEXES = """
SELECT array_agg(a.attname::text ORDER BY a.attname)
FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indpred IS NULL
  AND i.indexprs IS NULL
GROUP BY i.indexrelid
"""


# --- Partition planning ---------------------------------------------------------------------------


def min_max(base: str, column: str) -> str:
    """``SELECT min(c), max(c) FROM (base)``."""
    col = quote_ident(column)
    return f"SELECT min({col}), max({col}) FROM ({base}) AS pgferry_src"


def quantiles(base: str, column: str, *, sample: TableName | None = None) -> str:
    """Values of ``column`` at the fractions bound as ``$1::float8[]``.

    With ``sample``, read a 1 % block sample of that table instead of the whole source.
    """
    col = quote_ident(column)
    source = f"{sample.sql} TABLESAMPLE SYSTEM (1)" if sample else f"({base}) AS pgferry_src"
    return f"SELECT percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY {col}) FROM {source}"


def count_rows(query: str) -> str:
    """``SELECT count(*) FROM (query)``."""
    return f"SELECT count(*) FROM ({query}) AS pgferry_count"


def create_schema(schema: str) -> str:
    """``CREATE SCHEMA IF NOT EXISTS``."""
    return f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}"
