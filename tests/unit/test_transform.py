"""pgferry.engine.functions: applying transforms, loading them by path, the pool decision."""

from __future__ import annotations

import functools
import os
import signal
import sys
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgferry.engine import pool as pool_module
from pgferry.engine.functions import (
    TransformImportError,
    apply_transform,
    batch_transform,
    import_path_of,
    is_batch_transform,
    load_transform,
)
from pgferry.engine.pool import default_pool_size, measure_pool_benefit, pool_unpicklable_reason
from pgferry.errors import ConfigError, TransformError

COLUMNS = ("id", "name")
ROWS = [(1, "Ada Lovelace"), (2, "Alan Turing"), (3, "Grace Hopper")]


# Module-level transforms: importable by path, as a pool worker needs them.


def split(row: dict[str, Any]) -> dict[str, Any]:
    first, _, last = row["name"].partition(" ")
    return {"id": row["id"], "first": first, "last": last}


@batch_transform
def split_batch(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [split(row) for row in rows]


NOT_CALLABLE = 42


class Helpers:
    @staticmethod
    def keep(row: dict[str, Any]) -> dict[str, Any]:
        return row


def _fails_on_two(row: dict[str, Any]) -> dict[str, Any]:
    if row["id"] == 2:
        raise KeyError("surname")
    return row


# --- apply_transform: row transforms -----------------------------------------------------------


def test_row_transform_returning_dicts() -> None:
    cols, rows = apply_transform(split, False, COLUMNS, ROWS)
    assert cols == ("id", "first", "last")
    assert rows == [(1, "Ada", "Lovelace"), (2, "Alan", "Turing"), (3, "Grace", "Hopper")]
    assert all(type(r) is tuple for r in rows)


def test_row_transform_sees_a_dict_of_the_input_columns() -> None:
    seen: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(row))
        return row

    cols, rows = apply_transform(record, False, COLUMNS, ROWS)
    assert seen == [{"id": 1, "name": "Ada Lovelace"}, {"id": 2, "name": "Alan Turing"},
                    {"id": 3, "name": "Grace Hopper"}]  # fmt: skip
    assert cols == COLUMNS
    assert rows == ROWS


def test_key_order_of_later_rows_does_not_matter() -> None:
    def flip(row: dict[str, Any]) -> dict[str, Any]:
        if row["id"] == 1:
            return {"a": row["id"], "b": row["name"]}
        return {"b": row["name"], "a": row["id"]}

    cols, rows = apply_transform(flip, False, COLUMNS, ROWS)
    assert cols == ("a", "b")
    assert rows == ROWS


def test_none_drops_the_row() -> None:
    cols, rows = apply_transform(lambda r: None if r["id"] == 2 else r, False, COLUMNS, ROWS)
    assert cols == COLUMNS
    assert rows == [ROWS[0], ROWS[2]]


def test_every_row_dropped() -> None:
    assert apply_transform(lambda r: None, False, COLUMNS, ROWS) == (None, [])


def test_empty_batch() -> None:
    assert apply_transform(split, False, COLUMNS, []) == (None, [])


def test_list_fans_out() -> None:
    def twice(row: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"id": row["id"], "n": n} for n in range(row["id"])]

    cols, rows = apply_transform(twice, False, COLUMNS, ROWS)
    assert cols == ("id", "n")
    assert rows == [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]


def test_tuple_and_empty_list_fan_out() -> None:
    def fan(row: dict[str, Any]) -> Any:
        return () if row["id"] == 1 else ({"x": row["id"]},)

    assert apply_transform(fan, False, COLUMNS, ROWS) == (("x",), [(2,), (3,)])


@pytest.mark.parametrize(
    ("value", "type_name"), [(5, "int"), ("text", "str"), ({1, 2}, "set"), (object(), "object")]
)
def test_non_mapping_is_named(value: Any, type_name: str) -> None:
    def bad(row: dict[str, Any]) -> Any:
        return value

    with pytest.raises(TransformError) as info:
        apply_transform(bad, False, COLUMNS, ROWS)
    message = str(info.value)
    assert f"returned {type_name};" in message
    assert "expected a mapping" in message
    assert "bad" in message
    assert info.value.stage == "transform"


def test_non_mapping_after_the_first_row_is_named() -> None:
    def bad(row: dict[str, Any]) -> Any:
        return row if row["id"] == 1 else "oops"

    with pytest.raises(TransformError, match="returned str in a batch"):
        apply_transform(bad, False, COLUMNS, ROWS)


def test_non_mapping_inside_a_fan_out_list() -> None:
    with pytest.raises(TransformError, match="returned int"):
        apply_transform(lambda r: [r, 1], False, COLUMNS, ROWS)


def _varying(second: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def varying(row: dict[str, Any]) -> dict[str, Any]:
        return {"a": 1, "b": 2} if row["id"] == 1 else second

    return varying


@pytest.mark.parametrize(
    ("second", "fragment", "column"),
    [
        ({"a": 1, "b": 2, "c": 3}, "unexpected 'c'", "c"),
        ({"a": 1}, "missing 'b'", "b"),
        ({"a": 1, "z": 2}, "unexpected 'z'; missing 'b'", "z"),
        ({"b": 2, "y": 1, "z": 0}, "unexpected 'y', 'z'; missing 'a'", "y"),
    ],
)
def test_rows_with_different_columns(second: dict[str, Any], fragment: str, column: str) -> None:
    with pytest.raises(TransformError) as info:
        apply_transform(_varying(second), False, COLUMNS, ROWS)
    message = str(info.value)
    assert "returned rows with different columns" in message
    assert fragment in message
    assert info.value.column == column
    assert f"column {column!r}" in message
    assert "varying" in message


def test_raising_transform_names_function_exception_and_key() -> None:
    with pytest.raises(TransformError) as info:
        apply_transform(_fails_on_two, False, COLUMNS, ROWS, key=["id"])
    message = str(info.value)
    assert "_fails_on_two" in message
    assert "raised KeyError: 'surname'" in message
    assert "(at id=2)" in message
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.stage == "transform"


def test_raising_transform_names_a_composite_key() -> None:
    with pytest.raises(TransformError) as info:
        apply_transform(_fails_on_two, False, COLUMNS, ROWS, key=["id", "name"])
    assert "(at id=2, name='Alan Turing')" in str(info.value)


def test_raising_transform_without_key_still_says_where() -> None:
    with pytest.raises(TransformError) as info:
        apply_transform(_fails_on_two, False, COLUMNS, ROWS)
    assert "(at row " in str(info.value)


def test_raising_transform_without_key_does_not_show_row_values() -> None:
    with pytest.raises(TransformError) as info:
        apply_transform(_fails_on_two, False, COLUMNS, ROWS)
    assert "Alan Turing" not in str(info.value)


def test_raising_lambda_is_named() -> None:
    with pytest.raises(TransformError, match=r"<lambda> raised ZeroDivisionError"):
        apply_transform(lambda r: 1 / 0, False, COLUMNS, ROWS)


# --- apply_transform: batch transforms ---------------------------------------------------------


def test_batch_transform_marker() -> None:
    assert is_batch_transform(split_batch)
    assert not is_batch_transform(split)
    assert not is_batch_transform(lambda rows: rows)


def test_batch_transform_returns_the_function() -> None:
    def fn(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return rows

    assert batch_transform(fn) is fn


def test_batch_transform_applied_once_per_batch() -> None:
    calls: list[int] = []

    @batch_transform
    def fn(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        calls.append(len(rows))
        return [r for r in rows if r["id"] != 2]

    cols, rows = apply_transform(fn, True, COLUMNS, ROWS)
    assert calls == [3]
    assert cols == COLUMNS
    assert rows == [ROWS[0], ROWS[2]]


def test_batch_transform_same_result_as_row_transform() -> None:
    assert apply_transform(split_batch, True, COLUMNS, ROWS) == apply_transform(
        split, False, COLUMNS, ROWS
    )


def test_batch_transform_may_return_a_tuple_or_nothing() -> None:
    assert apply_transform(lambda rows: tuple(rows), True, COLUMNS, ROWS) == (COLUMNS, ROWS)
    assert apply_transform(lambda rows: [], True, COLUMNS, ROWS) == (None, [])


def test_batch_transform_returning_a_non_list() -> None:
    with pytest.raises(TransformError) as info:
        apply_transform(lambda rows: {"a": 1}, True, COLUMNS, ROWS)
    assert "returned dict; expected a list of rows" in str(info.value)


def test_batch_transform_raising() -> None:
    @batch_transform
    def explode(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise ValueError("no")

    with pytest.raises(TransformError) as info:
        apply_transform(explode, True, COLUMNS, ROWS)
    assert "batch transform" in str(info.value)
    assert "explode" in str(info.value)
    assert "raised ValueError: no" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_batch_transform_rows_with_different_columns() -> None:
    with pytest.raises(TransformError, match="missing 'name'"):
        apply_transform(lambda rows: [rows[0], {"id": 1}], True, COLUMNS, ROWS)


# --- load_transform ----------------------------------------------------------------------------


def test_load_transform_returns_callables_as_they_are() -> None:
    fn = functools.partial(split)
    assert load_transform(fn) is fn
    assert load_transform(split) is split


def test_load_transform_by_path() -> None:
    assert load_transform(f"{__name__}:split") is split
    assert load_transform(f"{__name__}:Helpers.keep") is Helpers.keep
    assert load_transform("os.path:join") is os.path.join


def _import_error(spec: str) -> str:
    with pytest.raises(TransformImportError) as info:
        load_transform(spec)
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, TransformError)
    assert isinstance(info.value, ValueError)
    assert info.value.__cause__ is not None or "not callable" in str(info.value)
    return str(info.value)


def test_load_transform_missing_module() -> None:
    message = _import_error("pgferry_no_such_module_xyz:fn")
    assert "cannot import transform module 'pgferry_no_such_module_xyz'" in message
    assert "'pgferry_no_such_module_xyz:fn'" in message
    assert "ModuleNotFoundError" in message


def test_load_transform_missing_attribute() -> None:
    message = _import_error(f"{__name__}:no_such_fn")
    assert f"module {__name__!r} has no attribute 'no_such_fn'" in message
    assert f"'{__name__}:no_such_fn'" in message


def test_load_transform_missing_nested_attribute() -> None:
    message = _import_error(f"{__name__}:Helpers.nope")
    assert "'Helpers.nope'" in message


def test_load_transform_not_callable() -> None:
    message = _import_error(f"{__name__}:NOT_CALLABLE")
    assert f"transform '{__name__}:NOT_CALLABLE' is a int, not callable" in message


def test_load_transform_module_that_fails_on_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"pgferry_unit_broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("raise RuntimeError('broken at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        message = _import_error(f"{module}:fn")
    finally:
        sys.modules.pop(module, None)
    assert "RuntimeError: broken at import" in message
    assert f"'{module}:fn'" in message


# --- import_path_of / pool_unpicklable_reason --------------------------------------------------


def test_import_path_of_module_level_functions() -> None:
    assert import_path_of(split) == f"{__name__}:split"
    assert import_path_of(split_batch) == f"{__name__}:split_batch"
    assert import_path_of(Helpers.keep) == f"{__name__}:Helpers.keep"
    assert import_path_of(os.path.join) == f"{os.path.join.__module__}:join"


def test_import_path_of_lambda_and_closure() -> None:
    def closure(row: dict[str, Any]) -> dict[str, Any]:
        return row

    assert import_path_of(lambda row: row) is None
    assert import_path_of(closure) is None
    assert import_path_of(_varying({})) is None


def test_import_path_of_other_callables() -> None:
    assert import_path_of(functools.partial(split)) is None
    copy = types.FunctionType(split.__code__, split.__globals__, "split")
    copy.__qualname__ = "split"
    assert import_path_of(copy) is None  # the path finds another object
    main_fn = types.FunctionType(split.__code__, {}, "split")
    main_fn.__module__ = "__main__"
    assert import_path_of(main_fn) is None


def test_pool_unpicklable_reason() -> None:
    assert pool_unpicklable_reason("pkg.mod:fn") is None
    assert pool_unpicklable_reason(split) is None
    assert pool_unpicklable_reason(lambda r: r) == (
        "the transform is not importable by module path"
    )


# --- the process pool decision -----------------------------------------------------------------


@pytest.fixture
def four_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)


def _measured(fn: Callable[..., Any], rows: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    _, out_rows = apply_transform(fn, False, COLUMNS, rows)
    return COLUMNS, rows, out_rows


@pytest.mark.usefixtures("four_cores")
def test_pool_not_worth_it_for_a_trivial_transform() -> None:
    columns, rows, out_rows = _measured(lambda r: r, ROWS * 10)
    use, why = measure_pool_benefit(0.0, columns, rows, out_rows)
    assert use is False
    assert "µs/row" in why
    assert "4 cores" in why


@pytest.mark.usefixtures("four_cores")
def test_pool_worth_it_for_a_slow_transform() -> None:
    columns, rows, out_rows = _measured(split, ROWS)
    # As if the transform had taken one second per row.
    use, why = measure_pool_benefit(float(len(rows)), columns, rows, out_rows)
    assert use is True
    assert "transform 1000000.0 µs/row" in why


def test_pool_not_used_on_one_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    columns, rows, out_rows = _measured(split, ROWS)
    use, _ = measure_pool_benefit(100.0, columns, rows, out_rows)
    assert use is False


def test_pool_decision_on_an_empty_first_batch() -> None:
    assert measure_pool_benefit(5.0, COLUMNS, [], []) == (False, "first batch was empty")


@pytest.mark.parametrize(("cores", "size"), [(1, 1), (2, 1), (4, 3), (9, 8), (64, 8)])
def test_default_pool_size(monkeypatch: pytest.MonkeyPatch, cores: int, size: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert default_pool_size() == size


def test_can_start_pool_in_the_main_process() -> None:
    assert pool_module.can_start_pool() is None


def test_worker_functions_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # Run the pool initializer and task here, without touching this process's SIGINT handler.
    handlers: list[Any] = []
    monkeypatch.setattr(signal, "signal", lambda sig, handler: handlers.append((sig, handler)))
    monkeypatch.setattr(pool_module, "_worker_fn", None)
    monkeypatch.setattr(pool_module, "_worker_is_batch", False)
    pool_module._init_worker(f"{__name__}:split_batch")
    assert handlers == [(signal.SIGINT, signal.SIG_IGN)]
    cols, rows, cpu, rejects = pool_module.run_in_worker(COLUMNS, list(ROWS), ["id"], False)
    assert rejects == []
    assert cols == ("id", "first", "last")
    assert rows[0] == (1, "Ada", "Lovelace")
    assert cpu >= 0.0
