"""The workload shipped for ``pgferry demo`` and its statements."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path

import pytest

from pgferry import demo
from pgferry.engine.functions import apply_transform, is_batch_transform

# tests/unit/<this file> -> parents[3] is the directory that holds the clone and `shared`.
SHARED_WORKLOAD = Path(__file__).resolve().parents[3] / "shared" / "bench" / "workload.sql"
PACKAGED_WORKLOAD = resources.files("pgferry").joinpath("workload.sql")


def test_packaged_workload_equals_the_shared_benchmark_workload() -> None:
    assert SHARED_WORKLOAD.is_file(), (
        f"the standard workload {SHARED_WORKLOAD} is missing: the shared directory must sit "
        "beside the repository clone"
    )
    packaged = PACKAGED_WORKLOAD.read_text(encoding="utf-8")
    shared = SHARED_WORKLOAD.read_text(encoding="utf-8")
    assert packaged == shared, (
        "src/pgferry/workload.sql differs from the shared benchmark workload; copy "
        f"{SHARED_WORKLOAD} over it"
    )


@pytest.fixture(scope="module")
def statements() -> list[str]:
    return demo.workload_statements(10)


def test_statement_kinds_in_order(statements: list[str]) -> None:
    heads = [" ".join(s.split()[:3]) for s in statements]
    assert heads == [
        "DROP TABLE IF",
        "CREATE TABLE bench_src",
        "INSERT INTO bench_src",
        "VACUUM (FREEZE, ANALYZE)",
        "CREATE OR REPLACE",
    ]
    assert statements[-1].startswith("CREATE OR REPLACE VIEW bench_expected AS")


def test_row_count_is_substituted(statements: list[str]) -> None:
    insert = statements[2]
    assert "generate_series(1, 10)" in insert
    assert all(":rows" not in s for s in statements)
    assert "generate_series(1, 12345)" in demo.workload_statements(12345)[2]


def test_no_psql_meta_commands_comments_or_separators(statements: list[str]) -> None:
    for statement in statements:
        assert statement == statement.strip()
        assert statement
        assert ";" not in statement
        for line in statement.splitlines():
            assert not line.lstrip().startswith("\\"), line
            assert not line.lstrip().startswith("--"), line
        assert "\\if" not in statement
        assert "\\set" not in statement


def test_vacuum_is_a_statement_of_its_own(statements: list[str]) -> None:
    vacuums = [s for s in statements if "VACUUM" in s]
    assert vacuums == ["VACUUM (FREEZE, ANALYZE) bench_src"]


def test_row_count_is_an_integer() -> None:
    with pytest.raises(ValueError):
        demo.workload_statements("10; DROP TABLE x")  # type: ignore[arg-type]


ROW = {
    "id": 7,
    "name": "Jean Luc Picard",
    "age": 59,
    "email": None,
    "created_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    "score": 1.5,
    "payload": {"n": 7},
}


def test_split_name_splits_on_the_first_space() -> None:
    out = demo.split_name(dict(ROW))
    assert out == {**{k: v for k, v in ROW.items() if k != "name"},
                   "first_name": "Jean", "last_name": "Luc Picard"}  # fmt: skip
    assert list(out) == ["id", "first_name", "last_name", "age", "email", "created_at",
                         "score", "payload"]  # fmt: skip


def test_split_name_without_a_space() -> None:
    out = demo.split_name({**ROW, "name": "Zoë"})
    assert (out["first_name"], out["last_name"]) == ("Zoë", "")


def test_batch_version_matches_the_row_version() -> None:
    assert is_batch_transform(demo.split_name_batch)
    columns = tuple(ROW)
    rows = [tuple(ROW.values()), tuple({**ROW, "id": 8, "name": "Mary Ann Smith"}.values())]
    assert apply_transform(demo.split_name_batch, True, columns, rows) == apply_transform(
        demo.split_name, False, columns, rows
    )
