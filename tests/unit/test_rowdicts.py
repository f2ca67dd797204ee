"""pgferry.engine.rowdicts: the dict each row becomes is exactly ``dict(zip(columns, row))``."""

from __future__ import annotations

from typing import Any

import pytest

from pgferry.engine.rowdicts import as_dicts, row_dict_builder


@pytest.mark.parametrize(
    "columns",
    [
        ("id", "name"),
        ("a",),
        (),
        tuple(f"c{i}" for i in range(300)),
        # Names that are not identifiers, are keywords, or look like code stay plain keys.
        ('x"; DROP TABLE y; --', "def", "1 + 1", "}", "k0", "v0", "row", "", "é"),
        ("a", "b", "a"),  # a repeated name keeps its last value, at its first position
    ],
)
def test_same_dicts_as_zip(columns: tuple[str, ...]) -> None:
    rows: list[Any] = [tuple(range(len(columns))), [str(i) for i in range(len(columns))]]
    built = as_dicts(columns, rows)
    expected = [dict(zip(columns, row, strict=True)) for row in rows]
    assert built == expected
    assert [list(d.items()) for d in built] == [list(d.items()) for d in expected]
    assert all(type(d) is dict for d in built)


def test_every_row_gets_its_own_dict() -> None:
    first, second = as_dicts(("a",), [(1,), (1,)])
    first["a"] = 2
    assert second == {"a": 1}


def test_a_row_of_another_length_raises() -> None:
    with pytest.raises(ValueError):
        as_dicts(("a", "b"), [(1, 2, 3)])
    with pytest.raises(ValueError):
        as_dicts(("a", "b"), [(1,)])
    with pytest.raises(ValueError):
        as_dicts((), [(1,)])


def test_the_builder_is_made_once_per_column_list() -> None:
    columns = ("once_a", "once_b")
    assert row_dict_builder(columns) is row_dict_builder(tuple(["once_a", "once_b"]))
