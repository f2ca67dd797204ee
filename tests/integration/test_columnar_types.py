"""The type round-trip matrix on the columnar lane (Arrow and Polars identity transforms).

The same matrix as :mod:`test_types`, compared the same way (the server's text of every value,
source and target). Each type travels natively as Arrow or as PostgreSQL's text with a
server-side cast (:mod:`pgferry.arrow`); either way it must come back exactly. The one thing
Arrow cannot hold, ``±infinity`` in a date or timestamp column, is refused with an error naming
the column, and the error's advice (cast it to text in the source query) then carries it.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_types import (
    INTERVALS,
    MATRIX,
    Raw,
    as_text,
    assert_same_rows,
    build_table,
    column_types,
)

import pgferry
from helpers import Databases, execute, fetch, fetchval

TRANSFORMS = {
    "arrow": "pgferry_test_transforms:identity_arrow",
    "polars": "pgferry_test_transforms:identity_polars",
}
NATIVE_TIME = {"d", "ts", "tstz"}
# The matrix without ±infinity in the columns that travel as Arrow dates and timestamps
# (arrays of them travel as text, infinities included).
COLUMNAR_MATRIX: list[tuple[str, str, list[str | Raw]]] = [
    (name, type_name, [v for v in values if not (name in NATIVE_TIME and "infinity" in str(v))])
    for name, type_name, values in MATRIX
]
COLUMNS = [name for name, _, _ in COLUMNAR_MATRIX]


def ferry(dbs: Databases, kind: str, source: str, target: str, **settings: Any) -> Any:
    job = pgferry.Job(
        source={"dsn": dbs.source, **settings.pop("read", {"table": source})},
        target={"dsn": dbs.target, "table": target},
        transform=TRANSFORMS[kind],
        **settings,
    )
    result = pgferry.run(job)
    assert result.path == "columnar"
    return result


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_every_type_round_trips_exactly(dbs: Databases, kind: str) -> None:
    n_rows = build_table(dbs.source, "types_src", COLUMNAR_MATRIX)
    result = ferry(dbs, kind, "types_src", "types_dst", batch_size=3)
    assert result.rows_written == n_rows
    assert column_types(dbs.target, "types_dst") == column_types(dbs.source, "types_src")
    assert assert_same_rows(dbs, "types_src", "types_dst", COLUMNS) == n_rows
    nulls = " AND ".join(f"{c} IS NULL" for c in COLUMNS)
    assert fetchval(dbs.target, f"SELECT id FROM types_dst WHERE {nulls}") == n_rows


# The upsert merge compares old and new rows: leave out the types without an equality operator.
NO_EQUALITY = {"js", "pt", "bx", "ls", "ln", "ci", "pa", "pg"}  # json and geometric types


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_into_an_existing_table_and_by_upsert(dbs: Databases, kind: str) -> None:
    """Text-carried columns go through the cast stage, then the upsert stage."""
    spec = [c for c in COLUMNAR_MATRIX if c[0] not in NO_EQUALITY]
    columns = [name for name, _, _ in spec]
    n_rows = build_table(dbs.source, "types_src", spec)
    ferry(dbs, kind, "types_src", "types_dst", batch_size=4)
    execute(dbs.target, "CREATE UNIQUE INDEX ON types_dst (id)")
    execute(dbs.target, "UPDATE types_dst SET num = 42, iv = '1 day', ia = '{9}'")
    result = pgferry.run(
        pgferry.Job(
            source={"dsn": dbs.source, "table": "types_src"},
            target={"dsn": dbs.target, "table": "types_dst", "mode": "upsert", "key": ["id"]},
            transform=TRANSFORMS[kind],
            batch_size=4,
        )
    )
    assert result.rows_written == n_rows
    assert assert_same_rows(dbs, "types_src", "types_dst", columns) == n_rows


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_interval_months_stay_months(dbs: Databases, kind: str) -> None:
    execute(dbs.source, "CREATE TABLE iv_src (id int PRIMARY KEY, iv interval)")
    for i, (given, _, _) in enumerate(INTERVALS, start=1):
        execute(dbs.source, "INSERT INTO iv_src VALUES ($1, $2::text::interval)", i, given)
    ferry(dbs, kind, "iv_src", "iv_dst")
    printed = [r[0] for r in fetch(dbs.target, "SELECT iv::text FROM iv_dst ORDER BY id")]
    assert printed == [shown for _, shown, _ in INTERVALS]


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_types_without_a_binary_codec_travel_as_text(dbs: Databases, kind: str) -> None:
    """money, tsvector, tsquery, int2vector and oidvector, which the rows lane refuses, are
    exact here."""
    spec: list[tuple[str, str, list[str | Raw]]] = [
        ("m", "money", ["12.34", "-0.01", "-92233720368547758.08"]),
        ("tv", "tsvector", ["a:1 b:2,3 'x y'"]),
        ("tq", "tsquery", ["a & (b | !c)"]),
        ("iv", "int2vector", ["1 2 3", ""]),
        ("ov", "oidvector", ["4 5 4294967295"]),
    ]
    build_table(dbs.source, "nb_src", spec)
    ferry(dbs, kind, "nb_src", "nb_dst")
    assert assert_same_rows(dbs, "nb_src", "nb_dst", ["m", "tv", "tq", "iv", "ov"]) == 4


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_dates_outside_pythons_range(dbs: Databases, kind: str) -> None:
    """No Python object is made on this lane, so BC and far-future values are fine."""
    spec: list[tuple[str, str, list[str | Raw]]] = [
        ("d", "date", ["4713-01-01 BC", "5874897-12-31"]),
        ("ts", "timestamp", ["0044-03-15 12:00 BC", "294000-12-31 23:59:59.999999"]),
        ("tstz", "timestamptz", ["4713-01-01 00:00+00 BC", "10000-01-01 00:00+00"]),
    ]
    build_table(dbs.source, "oor_src", spec)
    ferry(dbs, kind, "oor_src", "oor_dst")
    assert assert_same_rows(dbs, "oor_src", "oor_dst", ["d", "ts", "tstz"]) == 3


SENTINELS = [("d", "date"), ("ts", "timestamp"), ("tstz", "timestamptz")]


@pytest.mark.parametrize("kind", TRANSFORMS)
@pytest.mark.parametrize(("column", "type_name"), SENTINELS)
@pytest.mark.parametrize("value", ["infinity", "-infinity"])
def test_infinity_is_refused_naming_the_column(
    dbs: Databases, kind: str, column: str, type_name: str, value: str
) -> None:
    build_table(dbs.source, "inf_src", [(column, type_name, ["2024-02-29", value])])
    with pytest.raises(pgferry.ExtractError, match=f"column '{column}' holds infinity") as info:
        ferry(dbs, kind, "inf_src", "inf_dst")
    assert info.value.column == column
    assert not isinstance(info.value, pgferry.Transient)
    assert fetchval(dbs.target, "SELECT to_regclass('inf_dst') IS NULL")
    # What the message advises: read it as text; the target's own type casts it back.
    execute(dbs.target, f"CREATE TABLE inf_dst (id int PRIMARY KEY, {column} {type_name})")
    query = f"SELECT id, {column}::text AS {column} FROM inf_src"
    ferry(dbs, kind, "inf_src", "inf_dst", read={"query": query})
    assert as_text(dbs.target, "inf_dst", [column]) == as_text(dbs.source, "inf_src", [column])


@pytest.mark.parametrize("kind", TRANSFORMS)
def test_array_lower_bounds_and_composites(dbs: Databases, kind: str) -> None:
    """What decoded rows lose (test_types' xfails) travels exactly as text on this lane."""
    for dsn in (dbs.source, dbs.target):
        execute(dsn, "CREATE TYPE pair AS (a int, b text, c interval)")
    spec: list[tuple[str, str, list[str | Raw]]] = [
        ("a", "integer[]", ["[0:2]={1,2,3}", "[-1:0][1:2]={{1,2},{3,NULL}}"]),
        ("p", "pair", ['(1,"x, y","1 mon")', "(,,)"]),
        ("pa", "pair[]", ['{"(1,x,\\"1 mon\\")",NULL}', '{"(2,y,)"}']),
    ]
    build_table(dbs.source, "lb_src", spec)
    ferry(dbs, kind, "lb_src", "lb_dst")
    assert column_types(dbs.target, "lb_dst") == column_types(dbs.source, "lb_src")
    assert assert_same_rows(dbs, "lb_src", "lb_dst", ["a", "p", "pa"]) == 3
