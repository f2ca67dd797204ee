"""Faithful JSON for HTTP targets: every PostgreSQL value as the JSON a reader expects.

==========================================  ===============================================
PostgreSQL                                  JSON
==========================================  ===============================================
``smallint``, ``integer``, ``bigint``       number, exact
``numeric``                                 number, exact digits (never through a float);
                                            ``NaN``, ``Infinity``, ``-Infinity`` as strings
``real``, ``double precision``              number (shortest text that reads back the same);
                                            ``NaN``, ``Infinity``, ``-Infinity`` as strings
``boolean``                                 ``true`` / ``false``
text types, ``inet``, ``macaddr``…          string
``timestamptz``                             ISO 8601 string with offset,
                                            ``"2024-01-31T12:00:00.5+00:00"``
``timestamp``                               ISO 8601 string without offset
``date``, ``time``, ``timetz``              ISO 8601 string (``24:00:00`` kept)
``±infinity`` dates and timestamps          ``"infinity"`` / ``"-infinity"``
``interval``                                ISO 8601 duration, ``"P1M2DT3.5S"``
``bytea``                                   base64 string (RFC 4648, with padding)
``uuid``                                    string, ``"6f1c…"``
``json``, ``jsonb``                         embedded as JSON (an object stays an object)
arrays                                      JSON arrays (nested for several dimensions),
                                            elements encoded as above
composite types                             object of their fields
NULL                                        ``null``
==========================================  ===============================================

Rows are encoded column by column with text fragments, not through ``json.dumps`` of dicts:
``json`` cannot write a ``Decimal`` as an exact number nor embed JSON text as it is.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import ipaddress
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any

from pgferry.connection import EndOfDay, InfiniteDate, InfiniteDatetime, Interval

__all__ = ["RowEncoder", "dumps", "encode_value"]

Encode = Callable[[Any], str]

_quote: Callable[[str], str] = encode_basestring


def _number(value: float) -> str:
    if math.isfinite(value):
        return repr(value)
    return '"NaN"' if math.isnan(value) else ('"Infinity"' if value > 0 else '"-Infinity"')


def _decimal(value: decimal.Decimal) -> str:
    if value.is_finite():
        return str(value)
    if value.is_nan():
        return '"NaN"'
    return '"Infinity"' if value > 0 else '"-Infinity"'


def _infinite(value: dt.date) -> str:
    return '"infinity"' if value.year == dt.MAXYEAR else '"-infinity"'


def _end_of_day(value: dt.time) -> str:
    offset = value.isoformat()[15:]  # "23:59:59.999999" then the offset, if any
    return f'"24:00:00{offset}"'


def _seconds(micros: int) -> str:
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}.{frac:06d}".rstrip("0").rstrip(".") if frac else f"{sign}{whole}"


def _interval(value: Interval) -> str:
    months, days, micros = value
    years = int(months / 12)  # toward zero: -14 months is -1 year and -2 months
    months -= years * 12
    date = "".join(f"{n}{u}" for n, u in ((years, "Y"), (months, "M"), (days, "D")) if n)
    time = f"T{_seconds(micros)}S" if micros else ""
    return f'"P{date}{time}"' if date or time else '"PT0S"'


def _timedelta(value: dt.timedelta) -> str:
    return _interval(Interval(0, value.days, value.seconds * 1_000_000 + value.microseconds))


def _bytes(value: bytes | bytearray | memoryview) -> str:
    return '"' + base64.b64encode(value).decode("ascii") + '"'


def _iso(value: dt.date | dt.time) -> str:
    return '"' + value.isoformat() + '"'


def _sequence(value: Iterable[Any]) -> str:
    return "[" + ",".join([encode_value(v) for v in value]) + "]"


def _mapping(value: Mapping[Any, Any]) -> str:
    return "{" + ",".join([_quote(str(k)) + ":" + encode_value(v) for k, v in value.items()]) + "}"


def _text(value: Any) -> str:
    return _quote(str(value))


_BY_TYPE: dict[type, Encode] = {
    str: _quote,
    int: str,
    bool: lambda v: "true" if v else "false",
    float: _number,
    decimal.Decimal: _decimal,
    dt.datetime: _iso,
    dt.date: _iso,
    dt.time: _iso,
    InfiniteDate: _infinite,
    InfiniteDatetime: _infinite,
    EndOfDay: _end_of_day,
    Interval: _interval,
    dt.timedelta: _timedelta,
    bytes: _bytes,
    bytearray: _bytes,
    memoryview: _bytes,
    uuid.UUID: _text,
    list: _sequence,
    tuple: _sequence,
    dict: _mapping,
    type(None): lambda v: "null",
    ipaddress.IPv4Address: _text,
    ipaddress.IPv6Address: _text,
    ipaddress.IPv4Network: _text,
    ipaddress.IPv6Network: _text,
    ipaddress.IPv4Interface: _text,
    ipaddress.IPv6Interface: _text,
}


def encode_value(value: Any) -> str:
    """One Python value (as pgferry decodes PostgreSQL values) as JSON text."""
    enc = _BY_TYPE.get(type(value))
    if enc is not None:
        return enc(value)
    return _slow(value)


def _slow(value: Any) -> str:
    # Subclasses and library types: checked in the order of the table above.
    for kind in (bool, int, float, decimal.Decimal, str, bytes, uuid.UUID):
        if isinstance(value, kind):
            return _BY_TYPE[kind](value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return _iso(value)
    if hasattr(value, "keys") and hasattr(value, "items"):  # asyncpg.Record (a composite)
        return _mapping(dict(value.items()))
    if isinstance(value, Mapping):
        return _mapping(value)
    if isinstance(value, Sequence):
        return _sequence(value)
    return _text(value)  # ranges, geometric types, bit strings: their text form


def _embedded(value: Any) -> str:
    # json/jsonb arrive as their JSON text (pgferry's codecs), a transform may return a value.
    return value if type(value) is str else encode_value(value)


def _embedded_array(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join([_embedded_array(v) for v in value]) + "]"
    return _embedded(value)


def _column_encoder(type_name: str | None) -> Encode:
    base = (type_name or "").split("(")[0].strip()
    if base in ("json", "jsonb"):
        return _embedded
    if base.endswith("[]") and base.removesuffix("[]").rstrip("[]") in ("json", "jsonb"):
        return _embedded_array
    return encode_value


class RowEncoder:
    """Encodes rows of fixed columns as JSON objects.

    Args:
        columns: Column names, in row order.
        types: PostgreSQL types by name (``format_type`` text); a column without one is
            encoded by its values' Python types, and ``json``/``jsonb`` text is embedded.
    """

    def __init__(self, columns: Sequence[str], types: Mapping[str, str]) -> None:
        self.columns = tuple(columns)
        self._prefixes = [("{" if i == 0 else ",") + _quote(c) + ":" for i, c in enumerate(columns)]
        self._encoders = [_column_encoder(types.get(c)) for c in columns]

    def row(self, row: Sequence[Any]) -> str:
        """One row as a JSON object."""
        if not self.columns:
            return "{}"
        return (
            "".join([p + e(v) for p, e, v in zip(self._prefixes, self._encoders, row, strict=True)])
            + "}"
        )

    def rows(self, rows: Iterable[Sequence[Any]]) -> list[str]:
        """Each row as a JSON object."""
        return [self.row(r) for r in rows]


def dumps(value: Any) -> str:
    """Any value (rows as dicts, lists of them) as JSON with the table's conventions.

    For :attr:`~pgferry.httpspec.HttpTarget.request` hooks that build their own bodies
    (Elasticsearch ``_bulk``, say).
    """
    return encode_value(value)
