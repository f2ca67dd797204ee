"""Codecs of the row path: asyncpg's C codecs where they are exact and faster, pgferry's where not.

pgferry's Python codecs (:func:`pgferry.connection.install_codecs`) make every value round-trip
exactly. Measured per value on the standard workload (decode / encode, ns):

============  ==============  ==============
type          asyncpg (C)     pgferry (Python)
============  ==============  ==============
timestamptz   ≈500 / ≈1000    ≈360 / ≈370
jsonb         ≈100 / ≈90      ≈200 / ≈400
============  ==============  ==============

asyncpg's C ``timestamptz`` codec is slower (its encoder compares with a naive
``datetime.max`` and converts time zones per value) and inexact (``9999-12-31 23:59:59.999999``
and ``infinity`` collide), so pgferry's stays. For ``json``/``jsonb`` the C codecs read and write
the same JSON text as pgferry's, four times faster on the way out; the one difference is that a
transform may return a dict or a list for a JSON column, which the C encoder refuses. So:

* a source connection always decodes JSON with the C codec (the text is the same);
* a target connection writing plain ``json``/``jsonb`` columns encodes with the C codec, and
  :class:`JsonAsText` serialises the values that are not text yet, batch by batch, before the
  COPY; where JSON sits inside an array, a composite or a domain, the exact Python encoder is
  installed instead, as before.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from pgferry.connection import install_codecs

__all__ = ["JsonAsText", "plain_columns", "prepare_source", "prepare_target"]

_JSON = {"json", "jsonb"}
# Types whose values hold no JSON at any depth (and arrays of them): with these and plain
# json/jsonb columns, JSON values can only sit where JsonAsText looks.
_NO_JSON_INSIDE = re.compile(
    r"(smallint|integer|bigint|numeric(\(\d+(,\d+)?\))?|real|double precision|boolean|text"
    r"|character( varying)?(\(\d+\))?|\"char\"|name|bytea|uuid|oid|date|interval.*"
    r"|(time|timestamp)(\(\d\))? with(out)? time zone|inet|cidr|macaddr8?"
    r"|bit( varying)?(\(\d+\))?|point|line|lseg|box|path|polygon|circle"
    r"|(int4|int8|num|ts|tstz|date)(multi)?range)(\[\])*"
)
_TEXT = {str, type(None)}


def plain_columns(types: Iterable[str]) -> bool:
    """Whether columns of these types (``format_type`` text) hold JSON only as plain values."""
    return all(t in _JSON or _NO_JSON_INSIDE.fullmatch(t) is not None for t in types)


async def prepare_source(conn: asyncpg.Connection) -> None:
    """Install the codecs a source connection decodes rows with."""
    await install_codecs(conn, exact_json=False)


class JsonAsText:
    """Serialise the values of JSON columns that a transform returned as dicts, lists, numbers…

    Args:
        columns: Indexes of the plain ``json``/``jsonb`` columns in the rows written.
    """

    def __init__(self, columns: Sequence[int]) -> None:
        self.columns = list(columns)

    def __call__(self, rows: list[Sequence[Any]]) -> list[Sequence[Any]]:
        """Return ``rows`` with every JSON value as text (changing only the rows that need it)."""
        for index in self.columns:
            col = list(map(operator.itemgetter(index), rows))
            if set(map(type, col)) <= _TEXT:
                continue  # the usual case: text read from a source, passed through
            for n, value in enumerate(col):
                if value is None or type(value) is str:
                    continue
                try:
                    text = json.dumps(value)
                except (TypeError, ValueError):
                    continue  # left as it is: the encoder's error names the column and row
                row = list(rows[n])
                row[index] = text
                rows[n] = tuple(row)
        return rows


async def prepare_target(
    conn: asyncpg.Connection, columns: Sequence[str], types: dict[str, str]
) -> JsonAsText | None:
    """Install the codecs a target connection writes ``columns`` with.

    Args:
        conn: The target connection.
        columns: Names of the columns written, in row order.
        types: Types (``format_type`` text) of the table written to, by column name.

    Returns:
        What every batch must pass through before it is written, if anything.
    """
    written = [types[c] for c in columns]
    if not plain_columns(written):
        await install_codecs(conn)
        return None
    await install_codecs(conn, exact_json=False)
    json_columns = [i for i, t in enumerate(written) if t in _JSON]
    return JsonAsText(json_columns) if json_columns else None
