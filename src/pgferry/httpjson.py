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

Rows are encoded by orjson (installed with ``pgferry[http]``) with JSON text embedded as
fragments and every value orjson does not know handed to :func:`encode_value`, the pure-Python
reference encoder (used alone when orjson is missing): ``json`` cannot write a ``Decimal`` as an
exact number nor embed JSON text as it is. The two give the same JSON values.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import functools
import ipaddress
import itertools
import math
import operator
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any

from pgferry.connection import EndOfDay, InfiniteDate, InfiniteDatetime, Interval

_orjson: Any
try:  # pgferry[http] installs it: 3-4x faster than the pure-Python encoder below
    import orjson as _orjson
except ImportError:  # pragma: no cover - the reference encoder still works
    _orjson = None

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


def _fragment(value: Any) -> Any:
    return _orjson.Fragment(encode_value(value))


def _float_value(value: Any) -> Any:
    if type(value) is float and not math.isfinite(value):
        return _orjson.Fragment(_number(value))
    if isinstance(value, list | tuple):  # arrays: NaN hides in them too
        return _orjson.Fragment(encode_value(value))
    return value


def _all_finite(values: list[Any]) -> bool:
    try:
        total = sum(filter(_NOT_NONE, values))
    except TypeError:  # arrays
        return False
    return isinstance(total, int | float) and math.isfinite(total)


_NOT_NONE = functools.partial(operator.is_not, None)


def _json_value(value: Any) -> Any:
    if type(value) is str:
        return _orjson.Fragment(value)
    if isinstance(value, list | tuple):
        return _orjson.Fragment(_embedded_array(value))
    return _orjson.Fragment(encode_value(value))


_INT64 = 2**63


def _any_value(value: Any) -> Any:
    # A column of no known type (a transform made it): only what orjson would get wrong.
    kind = type(value)
    if kind is str or kind is bool or kind is dt.datetime:
        return value
    if kind is float:
        return value if math.isfinite(value) else _orjson.Fragment(_number(value))
    if kind is int:
        return value if -_INT64 <= value < _INT64 else _orjson.Fragment(str(value))
    if isinstance(value, list | tuple | dict | dt.time):
        return _orjson.Fragment(encode_value(value))
    return value


def _fixer(type_name: str | None) -> Callable[[Any], Any] | None:
    """What a value of a column must go through before orjson sees it, if anything.

    orjson writes NaN as ``null``, refuses a ``time`` with a zone and integers past 64 bits, and
    cannot embed JSON text; everything it does not know at all (``Decimal``, intervals,
    ``bytes``, the ``±infinity`` markers…) reaches its ``default``, :func:`encode_value`.
    """
    base = (type_name or "").split("(")[0].strip()
    element = base.removesuffix("[]").rstrip("[]")
    if element in ("json", "jsonb"):
        return _json_value
    if element in ("real", "double precision"):
        return _float_value
    if element == "time with time zone" or (base.endswith("[]") and element.startswith("time")):
        return _fragment
    if not base:
        return _any_value
    return None


def _orjson_default(value: Any) -> Any:
    return _orjson.Fragment(encode_value(value))


class RowEncoder:
    """Encodes rows of fixed columns as JSON objects (with orjson when it is installed).

    Args:
        columns: Column names, in row order.
        types: PostgreSQL types by name (``format_type`` text); a column without one is
            encoded by its values' Python types, and ``json``/``jsonb`` text is embedded.
    """

    def __init__(self, columns: Sequence[str], types: Mapping[str, str]) -> None:
        self.columns = tuple(columns)
        self._prefixes = [("{" if i == 0 else ",") + _quote(c) + ":" for i, c in enumerate(columns)]
        self._encoders = [_column_encoder(types.get(c)) for c in columns]
        fixers = [(c, _fixer(types.get(c))) for c in columns]
        self._fixes = [(c, f) for c, f in fixers if f is not None]
        self.fast = _orjson is not None

    def row(self, row: Sequence[Any]) -> str:
        """One row as a JSON object (pure Python: the reference the fast path must match)."""
        if not self.columns:
            return "{}"
        return (
            "".join([p + e(v) for p, e, v in zip(self._prefixes, self._encoders, row, strict=True)])
            + "}"
        )

    def rows(self, rows: Iterable[Sequence[Any]]) -> list[str]:
        """Each row as a JSON object."""
        return [self.row(r) for r in rows]

    def _objects(self, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        # Rows come in the canonical column order and width (the load stage sees to it).
        objects = list(map(dict, map(zip, itertools.repeat(self.columns), rows)))
        for name, fix in self._fixes:
            if fix is _float_value and _all_finite([o[name] for o in objects]):
                continue  # the usual case, checked in C
            for obj in objects:
                value = obj[name]
                if value is not None:
                    obj[name] = fix(value)
        return objects

    def _dumps(self, value: Any) -> bytes:
        out: bytes = _orjson.dumps(value, default=_orjson_default, option=_orjson.OPT_NON_STR_KEYS)
        return out

    def array(self, rows: Sequence[Sequence[Any]]) -> bytes:
        """The rows as one JSON array of objects."""
        if not self.fast:
            return ("[" + ",".join(self.rows(rows)) + "]").encode()
        return self._dumps(self._objects(rows))

    def lines(self, rows: Sequence[Sequence[Any]]) -> bytes:
        """The rows as NDJSON: one object per line."""
        if not self.fast:
            return ("\n".join(self.rows(rows)) + "\n").encode()
        return b"".join([self._dumps(o) + b"\n" for o in self._objects(rows)])

    def one(self, row: Sequence[Any]) -> bytes:
        """One row as a JSON object."""
        if not self.fast:
            return self.row(row).encode()
        return self._dumps(self._objects([row])[0])


def dumps(value: Any) -> str:
    """Any value (rows as dicts, lists of them) as JSON with the table's conventions.

    For :attr:`~pgferry.httpspec.HttpTarget.request` hooks that build their own bodies
    (Elasticsearch ``_bulk``, say).
    """
    return encode_value(value)
