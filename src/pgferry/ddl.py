"""DDL of the schema step (:mod:`pgferry.engine.schema_step`) and of views (:mod:`pgferry.views`).

Built like everything in :mod:`pgferry.sql`: identifiers through :func:`~pgferry.sql.quote_ident`,
type names checked by :func:`~pgferry.sql.check_type_name`, values bound; relation names given as
text come from the server (``regclass`` output), never from the user.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pgferry.errors import ConfigError
from pgferry.sql import TableName, check_type_name, quote_columns, quote_ident

__all__ = [
    "BLOCKERS",
    "FORMAT_COMMENT_ON_VIEW",
    "FORMAT_VIEW_OWNER",
    "TERMINATE",
    "add_column",
    "alter_column_type",
    "copy_table_rows",
    "create_view",
    "drop_not_null",
    "drop_view",
    "lock_table_share",
]

_OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def drop_view(view: str) -> str:
    """``DROP VIEW`` of a view named by ``regclass`` text (server output; no CASCADE)."""
    return f"DROP VIEW {view}"


def create_view(view: str, definition: str, options: Sequence[str] = ()) -> str:
    """``CREATE VIEW`` again from server output: ``regclass`` text, ``reloptions`` entries
    (``name=value``, names checked) and ``pg_get_viewdef``."""
    with_ = ""
    if options:
        items = []
        for option in options:
            name, _, value = option.partition("=")
            if not _OPTION_NAME.fullmatch(name) or not re.fullmatch(r"[A-Za-z0-9_.]+", value):
                raise ConfigError(f"unexpected view option {option!r}")
            items.append(f"{name} = {value}")
        with_ = f" WITH ({', '.join(items)})"
    return f"CREATE VIEW {view}{with_} AS {definition}"


FORMAT_COMMENT_ON_VIEW = "SELECT format('COMMENT ON VIEW %s IS %L', $1::text, $2::text)"
FORMAT_VIEW_OWNER = "SELECT format('ALTER VIEW %s OWNER TO %I', $1::text, $2::text)"


def add_column(table: TableName, column: str, type_name: str) -> str:
    """``ALTER TABLE … ADD COLUMN IF NOT EXISTS`` (nullable, no default: no rewrite)."""
    return (
        f"ALTER TABLE {table.sql} ADD COLUMN IF NOT EXISTS {quote_ident(column)} "
        f"{check_type_name(type_name)}"
    )


def alter_column_type(table: TableName, column: str, type_name: str, *, using: bool) -> str:
    """``ALTER TABLE … ALTER COLUMN … TYPE …`` (``using``: convert with an explicit cast)."""
    col = quote_ident(column)
    new = check_type_name(type_name)
    suffix = f" USING {col}::{new}" if using else ""
    return f"ALTER TABLE {table.sql} ALTER COLUMN {col} TYPE {new}{suffix}"


def drop_not_null(table: TableName, column: str) -> str:
    """``ALTER TABLE … ALTER COLUMN … DROP NOT NULL``."""
    return f"ALTER TABLE {table.sql} ALTER COLUMN {quote_ident(column)} DROP NOT NULL"


def lock_table_share(table: TableName) -> str:
    """``LOCK TABLE … IN SHARE MODE``: readers go on, writers wait (a consistent copy)."""
    return f"LOCK TABLE {table.sql} IN SHARE MODE"


def copy_table_rows(
    into: TableName, source: TableName, columns: Sequence[str], casts: dict[str, str]
) -> str:
    """``INSERT INTO into (cols) OVERRIDING SYSTEM VALUE SELECT cols FROM source``, casting the
    columns named in ``casts`` to their new types."""
    items = [
        f"{quote_ident(c)}::{check_type_name(casts[c])}" if c in casts else quote_ident(c)
        for c in columns
    ]
    return (
        f"INSERT INTO {into.sql} ({quote_columns(columns)}) OVERRIDING SYSTEM VALUE "
        f"SELECT {', '.join(items)} FROM {source.sql}"
    )


BLOCKERS = """
SELECT DISTINCT a.pid, coalesce(a.application_name, ''),
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.relation = to_regclass($1) AND l.granted
  AND l.pid <> pg_backend_pid()
ORDER BY 1
"""
"""Sessions holding any lock on a table (``$1``: its quoted name): what a change waits for."""

TERMINATE = "SELECT pg_terminate_backend($1::int)"
