"""The columnar lane's pure parts: decorators, type rules, missing extras, SQL, packaging."""

from __future__ import annotations

import datetime as dt
import sys
import tomllib
from pathlib import Path

import pyarrow as pa
import pytest
from packaging.requirements import Requirement

import pgferry
from pgferry import arrow, sql_arrow
from pgferry.demo import split_name, split_name_arrow, split_name_polars
from pgferry.engine.lanes import arrow_codec as codec
from pgferry.errors import SchemaError

ROOT = Path(__file__).resolve().parents[2]


def test_decorators_are_public_and_mark_the_kind() -> None:
    assert {"arrow_transform", "polars_transform"} <= set(pgferry.__all__)
    assert arrow.transform_kind(split_name_arrow) == "arrow"
    assert arrow.transform_kind(split_name_polars) == "polars"
    assert arrow.transform_kind(split_name) is None
    assert arrow.columnar_kind("pgferry.demo:split_name_polars") == "polars"
    assert arrow.columnar_kind("pgferry.demo:split_name") is None
    assert arrow.columnar_kind(None) is None


NAMES = ["Mary Ann Smith", "James Brown", "Zoë Müller", "José van der Berg", "Solo", ""]


def test_arrow_and_polars_split_name_agree_with_the_row_transform() -> None:
    batch = pa.RecordBatch.from_pydict(
        {
            "id": list(range(len(NAMES))),
            "name": NAMES,
            "age": [1] * len(NAMES),
            "email": [None] * len(NAMES),
            "created_at": [dt.datetime(2020, 1, 1, tzinfo=dt.UTC)] * len(NAMES),
            "score": [0.5] * len(NAMES),
            "payload": ["{}"] * len(NAMES),
        }
    )
    want = [split_name(row) for row in batch.to_pylist()]
    assert codec.call_transform(split_name_arrow, "arrow", batch).to_pylist() == want
    assert codec.call_transform(split_name_polars, "polars", batch).to_pylist() == want


@pytest.mark.parametrize(
    ("type_name", "kind", "as_text"),
    [
        ("bigint", "arrow", False),
        ("character varying(20)", "arrow", False),
        ("timestamp(3) with time zone", "arrow", False),
        ("numeric(38,10)", "arrow", True),
        ("numeric", "arrow", True),
        ("interval", "arrow", True),
        ("integer[]", "arrow", True),
        ("money", "arrow", False),
        ("xml", "arrow", True),
        ("tstzrange", "arrow", True),
        ("time without time zone", "arrow", False),
        ("time without time zone", "polars", True),
    ],
)
def test_which_types_travel_as_text(type_name: str, kind: arrow.Kind, as_text: bool) -> None:
    assert arrow.carried_as_text(type_name, kind) is as_text


def test_an_arrow_type_that_cannot_be_written_exactly_is_refused_naming_the_column() -> None:
    schema = pa.schema([("id", pa.int64()), ("score", pa.float64())])
    with pytest.raises(SchemaError, match="column 'score'") as info:
        codec.Encoder(["id", "score"], {"id": "bigint", "score": "integer"}, schema, "job")
    assert info.value.column == "score"
    # float64 into real would round: refused too; text into numeric is cast by the server.
    with pytest.raises(SchemaError, match="column 'score'"):
        codec.Encoder(["score"], {"score": "real"}, schema, "job")
    text = pa.schema([("n", pa.large_string())])
    assert codec.Encoder(["n"], {"n": "numeric(10,2)"}, text, "job").carried == ["n"]


def test_a_narrowing_cast_that_overflows_is_refused() -> None:
    table = pa.table({"n": pa.array([1, 2**40], pa.int64())})
    encoder = codec.Encoder(["n"], {"n": "integer"}, table.schema, "job")
    with pytest.raises(pgferry.TransformError, match="column 'n'"):
        encoder.encode(table, 3)


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "polars", None)  # as if not installed
    with pytest.raises(arrow.MissingDependencyError, match=r"pip install 'pgferry\[polars\]'"):
        arrow.require("polars", job="j")
    arrow.require("arrow", job="j")


def test_params_become_settings_outside_literals_and_comments() -> None:
    query = (
        "SELECT * FROM t WHERE a > $1::text::int AND b = '$2' AND \"$1\" = 1 "
        "AND c = $$ $2 $$ -- $2\n AND d < $2 AND e = $q$ $1 $q$ /* $1 */"
    )
    out = sql_arrow.params_as_settings(query, ["text", "date"], "pgferry.arg")
    assert out == (
        "SELECT * FROM t WHERE a > (current_setting('pgferry.arg1')::text)::text::int "
        "AND b = '$2' AND \"$1\" = 1 AND c = $$ $2 $$ -- $2\n "
        "AND d < (current_setting('pgferry.arg2')::date) AND e = $q$ $1 $q$ /* $1 */"
    )


def test_select_for_arrow_casts_text_columns_and_keeps_the_source_order() -> None:
    assert sql_arrow.select_for_arrow("Q", [("a", False)], ["a"]) == "Q"
    out = sql_arrow.select_for_arrow("Q", [("a", False), ("n", True)], ["n"])
    assert out == (
        'SELECT pgferry_src."a", pgferry_src."n"::text AS "n" FROM (Q) AS pgferry_src '
        'ORDER BY pgferry_src."n"'
    )


def test_uvloop_is_a_core_dependency_where_it_runs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (uvloop,) = [Requirement(r) for r in project["dependencies"] if r.startswith("uvloop")]
    assert uvloop.marker is not None
    base = {"platform_python_implementation": "CPython"}
    assert uvloop.marker.evaluate({**base, "sys_platform": "linux"})
    assert uvloop.marker.evaluate({**base, "sys_platform": "darwin"})
    assert not uvloop.marker.evaluate({**base, "sys_platform": "win32"})
    extras = project["optional-dependencies"]
    assert {"arrow", "polars"} <= set(extras)
    assert any("arrow" in r and "polars" in r for r in extras["dev"])
