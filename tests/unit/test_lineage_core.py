"""pgferry.lineage: the column-lineage rules and the ``column_lineage`` decorator."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import pytest

import pgferry
from pgferry.engine.functions import (
    TransformImportError,
    apply_transform,
    import_path_of,
    is_batch_transform,
    load_transform,
)
from pgferry.errors import ConfigError
from pgferry.lineage import LINEAGE_ATTR, column_lineage, declared_lineage, map_columns

SOURCE = ["id", "name", "email"]


# Module-level transforms: importable by path, as a pool worker needs them.


@pgferry.column_lineage(first=["name"], last=("name",), domain="email")
def split(row: dict[str, Any]) -> dict[str, Any]:
    first, _, last = row["name"].partition(" ")
    return {"id": row["id"], "first": first, "last": last, "domain": row["email"][1:]}


@pgferry.batch_transform
@pgferry.column_lineage(domain=["email"])
def batch_outer(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "domain": r["email"].rpartition("@")[2]} for r in rows]


@pgferry.column_lineage(domain=["email"])
@pgferry.batch_transform
def batch_inner(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "domain": r["email"].rpartition("@")[2]} for r in rows]


def undeclared(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "score": len(row["name"])}


def hand_declared(row: dict[str, Any]) -> dict[str, Any]:
    return row


# The form written before the decorator existed; it must keep working.
hand_declared.__pgferry_column_lineage__ = {"full": ("first", "last"), "n": "name"}  # type: ignore[attr-defined]


def badly_declared(row: dict[str, Any]) -> dict[str, Any]:
    return row


badly_declared.__pgferry_column_lineage__ = {"full": 3}  # type: ignore[attr-defined]


# --- map_columns --------------------------------------------------------------------------------


def test_without_a_transform_shared_columns_map_one_to_one() -> None:
    assert map_columns(SOURCE, ["id", "email", "loaded_at"], transformed=False) == {
        "id": (["id"], "identity"),
        "email": (["email"], "identity"),
    }


def test_without_a_transform_a_declaration_is_ignored() -> None:
    # Nothing ran that could compute "name" from "email": the column is copied.
    assert map_columns(SOURCE, ["name"], transformed=False, declared={"name": ["email"]}) == {
        "name": (["name"], "identity")
    }


def test_transform_pass_through_and_declared_and_undeclared_columns() -> None:
    declared = declared_lineage(split)
    mapping = map_columns(
        SOURCE, ["id", "first", "last", "domain", "score"], transformed=True, declared=declared
    )
    assert mapping == {
        "id": (["id"], "same-name"),
        "first": (["name"], "declared"),
        "last": (["name"], "declared"),
        "domain": (["email"], "declared"),
        "score": (SOURCE, "all"),
    }


def test_a_declaration_overrides_the_same_name_rule() -> None:
    mapping = map_columns(SOURCE, ["email"], transformed=True, declared={"email": ["name", "id"]})
    assert mapping == {"email": (["name", "id"], "declared")}


def test_declared_columns_the_source_lacks_are_dropped() -> None:
    mapping = map_columns(
        SOURCE, ["full"], transformed=True, declared={"full": ["name", "nickname"]}
    )
    assert mapping == {"full": (["name"], "declared")}


def test_an_undeclared_transform_maps_new_columns_to_every_source_column() -> None:
    mapping = map_columns(
        SOURCE, ["id", "score"], transformed=True, declared=declared_lineage(undeclared)
    )
    assert mapping == {"id": (["id"], "same-name"), "score": (SOURCE, "all")}
    # A fresh list each time: callers may change one without touching the others.
    assert mapping["score"][0] is not SOURCE


# --- declared_lineage -----------------------------------------------------------------------


def test_declared_lineage_by_callable_and_by_path() -> None:
    expected = {"first": ["name"], "last": ["name"], "domain": ["email"]}
    assert declared_lineage(split) == expected
    assert declared_lineage(f"{__name__}:split") == expected


def test_declared_lineage_returns_a_copy() -> None:
    declared = declared_lineage(split)
    assert declared is not None
    declared["first"].append("email")
    assert declared_lineage(split) == {"first": ["name"], "last": ["name"], "domain": ["email"]}


def test_declared_lineage_of_a_hand_set_attribute() -> None:
    assert declared_lineage(hand_declared) == {"full": ["first", "last"], "n": ["name"]}


def test_nothing_declared() -> None:
    assert declared_lineage(None) is None
    assert declared_lineage(undeclared) is None
    assert declared_lineage(str.upper) is None


def test_declared_lineage_of_an_unimportable_transform_raises() -> None:
    with pytest.raises(TransformImportError, match="no_such_module"):
        declared_lineage("no_such_module:fn")


def test_a_malformed_hand_set_attribute_names_the_column() -> None:
    with pytest.raises(ConfigError, match="'full'") as info:
        declared_lineage(badly_declared)
    assert info.value.column == "full"

    def listed(row: Any) -> Any:
        return row

    listed.__pgferry_column_lineage__ = ["full"]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="must be a mapping"):
        declared_lineage(listed)


# --- The decorator ------------------------------------------------------------------------


def test_the_decorator_returns_the_same_function_with_the_attribute() -> None:
    def fn(row: Any) -> Any:
        return row

    assert column_lineage(a=["x"], b="y")(fn) is fn
    assert getattr(fn, LINEAGE_ATTR) == {"a": ["x"], "b": ["y"]}
    assert LINEAGE_ATTR == "__pgferry_column_lineage__"
    assert pgferry.column_lineage is column_lineage
    assert "column_lineage" in pgferry.__all__


def test_the_decorator_accepts_column_names_that_are_not_identifiers() -> None:
    @column_lineage(**{"full name": ["first", "last"]})
    def fn(row: Any) -> Any:
        return row

    assert declared_lineage(fn) == {"full name": ["first", "last"]}


def test_one_decorator_on_two_functions_shares_no_state() -> None:
    decorate = column_lineage(a=["x"])

    @decorate
    def one(row: Any) -> Any:
        return row

    @decorate
    def two(row: Any) -> Any:
        return row

    getattr(one, LINEAGE_ATTR)["a"].append("y")
    assert declared_lineage(two) == {"a": ["x"]}


def test_applying_it_again_replaces_the_declaration() -> None:
    @column_lineage(b=["y"])
    @column_lineage(a=["x"])
    def fn(row: Any) -> Any:
        return row

    assert declared_lineage(fn) == {"b": ["y"]}


@pytest.mark.parametrize("fn", [batch_outer, batch_inner], ids=["outer", "inner"])
def test_it_composes_with_batch_transform_in_either_order(fn: Any) -> None:
    assert is_batch_transform(fn)
    assert declared_lineage(fn) == {"domain": ["email"]}
    assert map_columns(
        ["id", "email"], ["id", "email", "domain"], transformed=True, declared=declared_lineage(fn)
    ) == {
        "id": (["id"], "same-name"),
        "email": (["email"], "same-name"),
        "domain": (["email"], "declared"),
    }
    # The marked batch transform still runs as one: a list of rows in, a list out.
    columns, rows = apply_transform(fn, is_batch_transform(fn), ("id", "email"), [(1, "a@x.org")])
    assert (columns, rows) == (("id", "email", "domain"), [(1, "a@x.org", "x.org")])


def test_a_decorated_transform_stays_importable_and_picklable() -> None:
    # The process pool imports the transform by path and pickles it by reference.
    assert import_path_of(split) == f"{__name__}:split"
    assert load_transform(f"{__name__}:split") is split
    assert pickle.loads(pickle.dumps(split)) is split
    assert import_path_of(batch_outer) == f"{__name__}:batch_outer"


@pytest.mark.parametrize(
    ("mapping", "column"),
    [
        ({"first": 3}, "first"),
        ({"first": None}, "first"),
        ({"first": ["name", 3]}, "first"),
        ({"first": [""]}, "first"),
        ({"first": {"name"}}, "first"),  # a set has no order; refused like any other type
        ({"first": {"name": 1}}, "first"),
    ],
)
def test_bad_decorator_input_names_the_column(mapping: dict[str, Any], column: str) -> None:
    with pytest.raises(ConfigError, match=f"column {column!r}") as info:
        column_lineage(**mapping)
    assert info.value.column == column
    assert isinstance(info.value, ValueError)


def test_bad_decorator_use() -> None:
    with pytest.raises(ConfigError, match="at least one column"):
        column_lineage()

    def fn(row: Any) -> Any:
        return row

    with pytest.raises(ConfigError, match="keywords"):
        column_lineage(fn)  # @pgferry.column_lineage without parentheses
    with pytest.raises(ConfigError, match="non-empty strings"):
        column_lineage(**{"": ["x"]})
    with pytest.raises(ConfigError, match="decorates a transform"):
        column_lineage(a=["x"])("not a function")  # type: ignore[type-var]


def test_the_core_module_imports_no_orchestrator() -> None:
    code = (
        "import sys, pgferry.lineage; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('airflow', 'dagster')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
