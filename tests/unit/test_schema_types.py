"""pgferry.schema: Python-to-PostgreSQL type inference and the types of new target columns."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import ipaddress
import uuid
from typing import Any

import asyncpg.pgproto.pgproto as pgproto
import pytest

from pgferry.connection import Interval
from pgferry.errors import ConfigError, SchemaError
from pgferry.schema import Column, check_unique_names, infer_type, output_columns
from pgferry.sql import check_type_name

UTC = dt.UTC
PLUS_TWO = dt.timezone(dt.timedelta(hours=2))


class _Colour(enum.IntEnum):
    RED = 1


class UUID:  # named like asyncpg's own UUID class on purpose
    """A UUID type that is not a uuid.UUID subclass, as older asyncpg versions had."""


INFERRED: list[tuple[Any, str]] = [
    (True, "boolean"),
    (False, "boolean"),
    (0, "bigint"),
    (-(2**63), "bigint"),
    (_Colour.RED, "bigint"),
    (1.5, "double precision"),
    (float("nan"), "double precision"),
    (decimal.Decimal("1.10"), "numeric"),
    ("", "text"),
    ("text", "text"),
    (dt.datetime(2024, 1, 1, 12, 0), "timestamp"),
    (dt.datetime(2024, 1, 1, 12, 0, tzinfo=UTC), "timestamp with time zone"),
    (dt.datetime(2024, 1, 1, 12, 0, tzinfo=PLUS_TWO), "timestamp with time zone"),
    (dt.date(2024, 1, 1), "date"),
    (dt.time(12, 0), "time"),
    (dt.time(12, 0, tzinfo=UTC), "time with time zone"),
    (dt.timedelta(days=1), "interval"),
    (Interval(1, 2, 3), "interval"),
    ({"a": 1}, "jsonb"),
    ([1, 2], "jsonb"),
    ({}, "jsonb"),
    (b"\x00", "bytea"),
    (bytearray(b"ab"), "bytea"),
    (memoryview(b"ab"), "bytea"),
    (uuid.UUID(int=1), "uuid"),
    (pgproto.UUID("12345678-1234-5678-1234-567812345678"), "uuid"),
    (UUID(), "uuid"),
    (ipaddress.ip_network("10.0.0.0/8"), "cidr"),
    (ipaddress.ip_network("2001:db8::/32"), "cidr"),
    (ipaddress.ip_address("10.0.0.1"), "inet"),
    (ipaddress.ip_address("::1"), "inet"),
    (ipaddress.ip_interface("10.0.0.1/24"), "inet"),
]


@pytest.mark.parametrize(("value", "type_name"), INFERRED, ids=lambda v: repr(v)[:40])
def test_infer_type(value: Any, type_name: str) -> None:
    assert infer_type(value) == type_name


@pytest.mark.parametrize("type_name", sorted({t for _, t in INFERRED}))
def test_inferred_types_are_valid_type_names(type_name: str) -> None:
    assert check_type_name(type_name) == type_name


def test_bool_is_checked_before_int() -> None:
    assert isinstance(True, int)
    assert infer_type(True) == "boolean"
    assert infer_type(1) == "bigint"


def test_datetime_is_checked_before_date() -> None:
    assert isinstance(dt.datetime(2024, 1, 1), dt.date)
    assert infer_type(dt.datetime(2024, 1, 1)) == "timestamp"


@pytest.mark.parametrize("value", [None, (1, 2), {1, 2}, frozenset(), object(), 1j, Ellipsis])
def test_unknown_types(value: Any) -> None:
    assert infer_type(value) is None


# --- output_columns ----------------------------------------------------------------------------

SOURCE = [Column("id", "integer"), Column("total", "numeric(12,2)"), Column("at", "timestamp(3)")]


def test_pass_through_keeps_the_exact_source_type() -> None:
    cols = output_columns(["id", "total", "at"], [(1, decimal.Decimal("1.00"), None)], SOURCE, {})
    assert cols == SOURCE


def test_declared_type_wins() -> None:
    cols = output_columns(
        ["id", "extra"],
        [(1, 2)],
        SOURCE,
        {"id": "bigint", "extra": "numeric(38,10)"},
    )
    assert cols == [Column("id", "bigint"), Column("extra", "numeric(38,10)")]


def test_declared_type_for_an_all_null_column() -> None:
    cols = output_columns(["note"], [(None,), (None,)], SOURCE, {"note": "text"})
    assert cols == [Column("note", "text")]


def test_new_columns_are_inferred_from_the_first_non_null_value() -> None:
    rows = [
        (None, None, {"k": 1}),
        ("x", None, None),
        (5, dt.datetime(2024, 1, 1, tzinfo=UTC), None),
    ]
    cols = output_columns(["label", "seen_at", "meta"], rows, SOURCE, {})
    assert cols == [
        Column("label", "text"),
        Column("seen_at", "timestamp with time zone"),
        Column("meta", "jsonb"),
    ]


def test_order_follows_the_output_names() -> None:
    cols = output_columns(["b", "id", "a"], [(1.0, 1, True)], SOURCE, {})
    assert [c.name for c in cols] == ["b", "id", "a"]
    assert [c.type for c in cols] == ["double precision", "integer", "boolean"]


def test_all_null_column_is_a_schema_error() -> None:
    with pytest.raises(SchemaError) as info:
        output_columns(["id", "nickname"], [(1, None), (2, None)], SOURCE, {})
    err = info.value
    message = str(err)
    assert err.column == "nickname"
    assert "'nickname'" in message
    assert "every value in the first batch is NULL" in message
    assert "declare it under target.columns" in message
    assert isinstance(err, ConfigError)


def test_column_with_no_rows_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match=r"declare it under target\.columns"):
        output_columns(["new"], [], SOURCE, {})


def test_unknown_python_type_is_a_schema_error() -> None:
    with pytest.raises(SchemaError) as info:
        output_columns(["pair"], [(None,), ((1, 2),)], SOURCE, {})
    message = str(info.value)
    assert info.value.column == "pair"
    assert "values of Python type tuple have no default mapping" in message
    assert "declare it under target.columns" in message


def test_check_unique_names() -> None:
    check_unique_names([Column("a", "int"), Column("b", "int")], "the query")
    with pytest.raises(ConfigError) as info:
        check_unique_names([Column("a", "int"), Column("a", "text")], "the query")
    assert "the query returns two columns named 'a'" in str(info.value)
    assert info.value.column == "a"
