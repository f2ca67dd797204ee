"""Faithful JSON for HTTP targets: the table of pgferry.httpjson, fast path = reference path."""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import json
import uuid
from typing import Any

import pytest

from pgferry.connection import (
    DATE_INFINITY,
    TIME_24_00,
    TIMESTAMP_MINUS_INFINITY,
    TIMESTAMPTZ_INFINITY,
    Interval,
)
from pgferry.httpjson import RowEncoder, dumps, encode_value

D = decimal.Decimal
TZ = dt.timezone(dt.timedelta(hours=-3, minutes=-30))

# (PostgreSQL type, Python value as pgferry decodes it, the exact JSON text)
CASES: list[tuple[str, Any, str]] = [
    ("bigint", 9_223_372_036_854_775_807, "9223372036854775807"),
    ("integer", -5, "-5"),
    ("numeric(40,20)", D("12345678901234567890.12345678901234567890"),
     "12345678901234567890.12345678901234567890"),
    ("numeric", D("-0.000000000000000001"), "-1E-18"),
    ("numeric", D("NaN"), '"NaN"'),
    ("numeric", D("-Infinity"), '"-Infinity"'),
    ("double precision", 0.1, "0.1"),
    ("double precision", float("nan"), '"NaN"'),
    ("real", float("-inf"), '"-Infinity"'),
    ("boolean", True, "true"),
    ("text", 'é "quoted"\n\t', '"é \\"quoted\\"\\n\\t"'),
    ("timestamp with time zone", dt.datetime(2024, 1, 31, 12, 0, 0, 500000, tzinfo=dt.UTC),
     '"2024-01-31T12:00:00.500000+00:00"'),
    ("timestamp without time zone", dt.datetime(2024, 2, 29, 23, 59, 59),
     '"2024-02-29T23:59:59"'),
    ("timestamp with time zone", TIMESTAMPTZ_INFINITY, '"infinity"'),
    ("timestamp without time zone", TIMESTAMP_MINUS_INFINITY, '"-infinity"'),
    ("date", dt.date(2024, 1, 1), '"2024-01-01"'),
    ("date", DATE_INFINITY, '"infinity"'),
    ("time without time zone", dt.time(1, 2, 3, 4), '"01:02:03.000004"'),
    ("time without time zone", TIME_24_00, '"24:00:00"'),
    ("time with time zone", dt.time(1, 2, 3, tzinfo=TZ), '"01:02:03-03:30"'),
    ("interval", Interval(14, 3, 4_500_000), '"P1Y2M3DT4.5S"'),
    ("interval", Interval(0, 0, 0), '"PT0S"'),
    ("bytea", b"\x00\xff\x10", '"AP8Q"'),
    ("uuid", uuid.UUID(int=1), '"00000000-0000-0000-0000-000000000001"'),
    ("jsonb", '{"a": [1, 2.50, null]}', '{"a": [1, 2.50, null]}'),
    ("json", "[]", "[]"),
    ("jsonb[]", ['{"a": 1}', None], '[{"a": 1},null]'),
    ("integer[]", [[1, 2], [3, None]], "[[1,2],[3,null]]"),
    ("numeric[]", [D("1.10"), D("NaN")], '[1.10,"NaN"]'),
    ("double precision[]", [1.5, float("nan")], '[1.5,"NaN"]'),
    ("text[]", ["a", None], '["a",null]'),
    ("inet", ipaddress.ip_interface("10.0.0.1/24"), '"10.0.0.1/24"'),
    ("", {"made": D("1.5"), "by": [dt.date(2024, 1, 2)]}, '{"made":1.5,"by":["2024-01-02"]}'),
    ("", 2**70, "1180591620717411303424"),
    ("", float("inf"), '"Infinity"'),
]  # fmt: skip


@pytest.mark.parametrize(("type_name", "value", "expected"), CASES)
def test_each_value_is_encoded_faithfully(type_name: str, value: Any, expected: str) -> None:
    enc = RowEncoder(["v"], {"v": type_name} if type_name else {})
    reference = enc.row([value])
    assert reference == '{"v":' + expected + "}"
    # The fast path (orjson) gives the same JSON value, and the same numbers digit for digit.
    fast = enc.one([value]).decode()
    assert json.loads(fast, parse_float=D) == json.loads(reference, parse_float=D)
    assert enc.array([[value], [None]]).startswith(b"[{")
    assert json.loads(enc.lines([[value], [None]]).splitlines()[1]) == {"v": None}


def test_a_whole_row() -> None:
    cols = ["id", "doc", "amount", "at"]
    types = {"id": "bigint", "doc": "jsonb", "amount": "numeric", "at": "timestamp with time zone"}
    enc = RowEncoder(cols, types)
    row = (1, '{"k": "v"}', D("0.10"), dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    assert (
        json.loads(enc.array([row, row]), parse_float=D)
        == [{"id": 1, "doc": {"k": "v"}, "amount": D("0.10"), "at": "2024-01-01T00:00:00+00:00"}]
        * 2
    )


def test_dumps_for_request_hooks() -> None:
    assert dumps([{"a": D("1.0")}, None]) == '[{"a":1.0},null]'
    assert encode_value(b"") == '""'
