"""SQL text of the columnar lane: reading columns as text, casting them back, unbound params.

Like :mod:`pgferry.sql`, whose ``quote_ident`` quotes every identifier here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pgferry.sql import TableName, check_type_name, quote_columns, quote_ident

__all__ = ["insert_cast_from", "params_as_settings", "select_for_arrow"]


def select_for_arrow(query: str, columns: Sequence[tuple[str, bool]], order: Sequence[str]) -> str:
    """``query`` with the columns flagged ``True`` read as text; ``order`` (the position
    columns) repeated outside, qualified: the source values' order, not their text's."""
    if not any(as_text for _, as_text in columns):
        return query
    cols = [f"pgferry_src.{quote_ident(n)}" + f"::text AS {quote_ident(n)}" * t for n, t in columns]
    by = " ORDER BY " + ", ".join(f"pgferry_src.{quote_ident(c)}" for c in order) if order else ""
    return f"SELECT {', '.join(cols)} FROM ({query}) AS pgferry_src{by}"


def insert_cast_from(
    into: TableName | str, stage: str, columns: Sequence[str], types: dict[str, str]
) -> str:
    """``INSERT INTO into (cols) SELECT …`` from a stage, casting the columns in ``types``."""
    cols = [
        quote_ident(c) + (f"::{check_type_name(types[c])}" if c in types else "") for c in columns
    ]
    table = into.sql if isinstance(into, TableName) else quote_ident(into)
    select = f"SELECT {', '.join(cols)} FROM {quote_ident(stage)}"
    return f"INSERT INTO {table} ({quote_columns(columns)}) {select}"


_PARAM = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|(\$[A-Za-z_]\w*\$|\$\$).*?\1|\$(\d+)""",
    re.S,
)


def params_as_settings(query: str, types: Sequence[str], prefix: str) -> str:
    """``$n`` → ``(current_setting('<prefix>n')::type)`` outside literals, quoted names,
    comments and dollar quotes: for a reader that streams only unbound queries (the values
    are set by a bound ``set_config($1, $2, true)`` in its transaction)."""

    def sub(m: re.Match[str]) -> str:
        n = int(m.group(2) or 0)
        return f"(current_setting('{prefix}{n}')::{check_type_name(types[n - 1])})" if n else m[0]

    return _PARAM.sub(sub, query)
