"""The type round-trip matrix: every common type moves exactly, on every path.

Paths: ``pipe`` (no transform: binary COPY straight through), ``rows-inline`` (identity row
transform in the main process) and ``rows-pool`` (the same transform in a pool of two worker
processes, so every decoded value is also pickled both ways).

Values are compared as the server prints them (``col::text``) in the source and in the target,
row by row and column by column. PostgreSQL's text output is exact for every type used here
(``float8``/``float4`` print shortest-exact since PostgreSQL 12), so equal text means an equal
value. When pgferry creates the target, its columns must have exactly the source's types
(``format_type(atttypid, atttypmod)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

import pgferry
from helpers import Databases, execute, fetch, fetchval

IDENTITY = "pgferry_test_transforms:identity"
WITH_REPRS = "pgferry_test_transforms:with_reprs"

PATH_SETTINGS: dict[str, dict[str, Any]] = {
    "pipe": {"transform": None},
    "rows-inline": {"transform": IDENTITY, "workers": 0},
    "rows-pool": {"transform": IDENTITY, "workers": 2},
}
ALL_PATHS = list(PATH_SETTINGS)
ROW_PATHS = ["rows-inline", "rows-pool"]


@dataclass(frozen=True)
class Raw:
    """A value given as an SQL expression rather than as text to cast."""

    sql: str


def lit(text: str) -> str:
    """``text`` as an SQL string literal (standard_conforming_strings is on)."""
    return "'" + text.replace("'", "''") + "'"


def value_sql(value: str | Raw | None, type_name: str) -> str:
    if value is None:
        return "NULL"
    expr = value.sql if isinstance(value, Raw) else lit(value)
    return f"({expr})::{type_name}"


def ferry(
    dbs: Databases,
    path: str,
    source: str,
    target: str,
    **overrides: Any,
) -> pgferry.RunResult:
    """Run one job on ``path`` and check that it ran the way the path says."""
    settings = {**PATH_SETTINGS[path], **overrides}
    job = pgferry.Job(
        source={"dsn": dbs.source, "table": source},
        target={"dsn": dbs.target, "table": target},
        **settings,
    )
    result = pgferry.run(job)
    assert result.status == "success"
    assert result.path == ("pipe" if path == "pipe" else "rows")
    if path == "rows-pool":
        assert result.workers == 2
    elif path == "rows-inline":
        assert result.workers == 0
    return result


def column_types(dsn: str, table: str) -> list[tuple[str, str]]:
    rows = fetch(
        dsn,
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        table,
    )
    return [(r[0], r[1]) for r in rows]


def as_text(dsn: str, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    """Every row as the server prints it, ordered by ``id``."""
    select = ", ".join(f"{c}::text" for c in columns)
    return [tuple(r) for r in fetch(dsn, f"SELECT id, {select} FROM {table} ORDER BY id")]


def assert_same_rows(dbs: Databases, source: str, target: str, columns: list[str]) -> int:
    """Assert that both tables print identically, column by column; return the row count."""
    want = as_text(dbs.source, source, columns)
    got = as_text(dbs.target, target, columns)
    assert [r[0] for r in got] == [r[0] for r in want], "the target holds other rows"
    mismatches = [
        f"{col} (id {w[0]}): source {w[i]!r}, target {g[i]!r}"
        for i, col in enumerate(columns, start=1)
        for w, g in zip(want, got, strict=True)
        if w[i] != g[i]
    ]
    assert not mismatches, "values changed:\n  " + "\n  ".join(mismatches)
    return len(want)


def build_table(dsn: str, table: str, spec: list[tuple[str, str, list[str | Raw]]]) -> int:
    """Create ``table`` with an ``id`` and one column per ``(name, type, values)``.

    Row ``i`` holds the ``i``-th value of every column (NULL where a column has fewer values);
    one more row at the end is NULL in every column. Returns the number of rows.
    """
    n_rows = max(len(values) for _, _, values in spec) + 1
    columns = ", ".join(f"{name} {type_name}" for name, type_name, _ in spec)
    execute(dsn, f"CREATE TABLE {table} (id int PRIMARY KEY, {columns})")
    names = ", ".join(name for name, _, _ in spec)
    for i in range(n_rows):
        values = ", ".join(
            value_sql(values[i] if i < len(values) else None, type_name)
            for _, type_name, values in spec
        )
        execute(dsn, f"INSERT INTO {table} (id, {names}) VALUES ({i + 1}, {values})")
    return n_rows


# --- The matrix ------------------------------------------------------------------------------

ALL_BYTES = Raw(
    "SELECT decode(string_agg(lpad(to_hex(b), 2, '0'), '' ORDER BY b), 'hex') "
    "FROM generate_series(0, 255) AS b"
)
ALL_BYTES_REVERSED = Raw(
    "SELECT decode(string_agg(lpad(to_hex(b), 2, '0'), '' ORDER BY b DESC), 'hex') "
    "FROM generate_series(0, 255) AS b"
)

TEXTS: list[str | Raw] = [
    "plain ascii",
    "",
    "emoji 👩‍👩‍👧‍👦 🇫🇷 🙂 and beyond the BMP 𝄞 \U0010ffff",
    "combining: e\u0301 a\u0308 Z\u0324\u0308 \u0915\u094d\u0937",
    "RTL: שלום עולם \u200f مرحبا بالعالم \u202eevil\u202c",
    "controls \t\n\r\x01\x1b\x1f\x7f and \u2028\u2029 and a BOM \ufeff",
    "quotes ' \" backslash \\ \\N NULL {} , ;",
    "NULL",
]

MATRIX: list[tuple[str, str, list[str | Raw]]] = [
    ("i2", "smallint", ["-32768", "32767", "0", "-1"]),
    ("i4", "integer", ["-2147483648", "2147483647", "0"]),
    ("i8", "bigint", ["-9223372036854775808", "9223372036854775807", "0"]),
    (
        "num",
        "numeric",
        [
            "NaN",
            "Infinity",
            "-Infinity",
            "0",
            "-1.500",
            "0.000000000000000000000000000001",
            "123456789012345678901234567890.123456789012345678901234567890",
            "1e100",
        ],
    ),
    (
        "num38",
        "numeric(38,10)",
        [
            "1234567890123456789012345678.1234567890",
            "-1234567890123456789012345678.1234567890",
            "0.0000000001",
            "0",
            "NaN",
            "1.5",
        ],
    ),
    (
        "f4",
        "real",
        ["1.1", "-0", "Infinity", "-Infinity", "NaN", "3.4028235e38", "1e-45", "1.1754944e-38"],
    ),
    (
        "f8",
        "double precision",
        [
            "0.1",
            "-0",
            "Infinity",
            "-Infinity",
            "NaN",
            "1.7976931348623157e308",
            "5e-324",
            "2.2250738585072014e-308",
        ],
    ),
    ("txt", "text", TEXTS),
    ("vc", "varchar(20)", ["abc", "", "é" * 20, "🙂" * 20, "trailing spaces   "]),
    ("ch", "char(5)", ["ab", "", "abcde", "äöü", "  x"]),
    ("by", "bytea", [ALL_BYTES, "", Raw("'\\x00'::bytea"), ALL_BYTES_REVERSED]),
    ("bo", "boolean", ["true", "false"]),
    (
        "d",
        "date",
        [
            "2024-02-29",
            "infinity",
            "-infinity",
            "9999-12-31",
            "0001-01-01",
            "1999-12-31",
            "2000-01-01",
            "1970-01-01",
        ],
    ),
    (
        "ts",
        "timestamp",
        [
            "2024-02-29 12:34:56.789012",
            "infinity",
            "-infinity",
            "9999-12-31 23:59:59.999999",
            "0001-01-01 00:00:00",
            "1999-12-31 23:59:59.999999",
            "1970-01-01 00:00:00.000001",
        ],
    ),
    (
        "tstz",
        "timestamptz",
        [
            "2024-06-01 12:00:00.123456+05:30",
            "infinity",
            "-infinity",
            "9999-12-31 23:59:59.999999+00",
            "0001-01-01 00:00:00+00",
            "1999-12-31 23:59:59.999999+00",
            "2024-10-27 01:30:00 Europe/Paris",
        ],
    ),
    ("tm", "time", ["00:00:00", "23:59:59.999999", "12:34:56.789", "24:00:00"]),
    (
        "ttz",
        "timetz",
        [
            "12:34:56.789+05:30",
            "00:00:00-12",
            "23:59:59.999999+14",
            "12:00:00-08:00:30",
            "24:00:00+01",
            "00:00:00+00",
        ],
    ),
    (
        "iv",
        "interval",
        [
            "1 mon",
            "1 year 2 mons 3 days 04:05:06.789",
            "-1 year -2 mons +3 days -04:05:06.000001",
            "-00:00:00.000001",
            "0",
            "infinity",
            "-infinity",
            "-1 days +23:59:59",
        ],
    ),
    (
        "uid",
        "uuid",
        [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ],
    ),
    (
        "js",
        "json",
        [
            '{"b": 1,   "a": [1, 2 ,3],\n  "a": null}',
            "  [ ]  ",
            '"\\u0000 \\u00e9 é"',
            "1e400",
            "null",
            '{"z":{"y":1,"x":2},"z":3}',
        ],
    ),
    (
        "jb",
        "jsonb",
        [
            '{"b": 1, "a": [1, 2.50, null], "a": "dup"}',
            "null",
            '"é\\u00e9"',
            "[]",
            "{}",
            "1.000",
        ],
    ),
    (
        "ip",
        "inet",
        ["192.168.1.5/24", "10.0.0.1", "::1", "2001:db8::1/64", "::ffff:1.2.3.4", "0.0.0.0/0"],
    ),
    ("cd", "cidr", ["10.0.0.0/8", "2001:db8::/32", "192.168.1.5/32", "0.0.0.0/0", "::/0"]),
    ("mac", "macaddr", ["08:00:2b:01:02:03", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"]),
    ("mac8", "macaddr8", ["08:00:2b:01:02:03:04:05", "08:00:2b:01:02:03"]),
    ("ia", "integer[]", ["{1,NULL,3}", "{}", "{NULL}", "{-2147483648,2147483647}"]),
    (
        "ta",
        "text[]",
        [
            Raw("ARRAY['a,b', '\"q\"', NULL, 'NULL', '', '{}', 'é 🙂', 'back\\slash', ' sp ']"),
            "{}",
            "{NULL,NULL}",
        ],
    ),
    ("i2d", "integer[]", ["{{1,2,3},{4,NULL,6}}", "{}", "{{NULL}}"]),
    ("na", "numeric[]", ["{NaN,1.50,NULL,-0.001}", "{}"]),
    ("da", "date[]", ["{infinity,9999-12-31,NULL,2024-02-29}", "{}"]),
    ("iva", "interval[]", ['{"1 mon",NULL,"-1 year 2 days"}', "{}"]),
    ("jba", "jsonb[]", [Raw("ARRAY['{\"b\":1,\"a\":2}'::jsonb, NULL, 'null'::jsonb]"), "{}"]),
    ("ua", "uuid[]", ["{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}", "{}"]),
    ("ir", "int4range", ["[1,10)", "empty", "(,5]", "[3,)", "(,)"]),
    (
        "tr",
        "tstzrange",
        [
            "[2020-01-01 00:00+00,2021-01-01 00:00+00)",
            "[2020-01-01 00:00+00,infinity)",
            "empty",
            "(-infinity,infinity)",
            "(,)",
        ],
    ),
    ("dr", "daterange", ["[2024-01-01,2024-02-01)", "[2024-01-01,infinity)", "empty"]),
    ("nr", "numrange", ["[1.50,2.500]", "(,0)", "empty"]),
    ("imr", "int4multirange", ["{[1,3),[5,7)}", "{}"]),
    ("pt", "point", ["(1.5,-2.25)", "(1e-300,1e300)", "(0,-0)"]),
    ("bx", "box", ["((1,2),(3,4))"]),
    ("ls", "lseg", ["[(0,0),(1.5,2.5)]"]),
    ("ln", "line", ["{1,-1,0.5}"]),
    ("ci", "circle", ["<(1,2),3.5>"]),
    ("pa", "path", ["[(0,0),(1,1),(2,0)]", "((0,0),(1,1),(2,0))"]),
    ("pg", "polygon", ["((0,0),(1,1),(2,0))"]),
    ("bt", "bit(4)", ["1010", "0000"]),
    ("vb", "bit varying", ["10101", ""]),
    ("qc", '"char"', ["x", ""]),
]
MATRIX_COLUMNS = [name for name, _, _ in MATRIX]


@pytest.mark.parametrize("path", ALL_PATHS)
def test_every_type_round_trips_exactly(dbs: Databases, path: str) -> None:
    n_rows = build_table(dbs.source, "types_src", MATRIX)
    # The edge values really are what the matrix says (no literal was mangled on the way in).
    assert fetchval(dbs.source, "SELECT octet_length(by) FROM types_src WHERE id = 1") == 256
    assert fetchval(dbs.source, "SELECT count(*) FROM types_src WHERE d = '9999-12-31'") == 1
    assert fetchval(dbs.source, "SELECT count(*) FROM types_src WHERE d = 'infinity'") == 1
    assert fetchval(dbs.source, "SELECT iv::text FROM types_src WHERE id = 1") == "1 mon"

    result = ferry(dbs, path, "types_src", "types_dst", batch_size=3)

    assert result.rows_written == n_rows
    assert column_types(dbs.target, "types_dst") == column_types(dbs.source, "types_src")
    assert assert_same_rows(dbs, "types_src", "types_dst", MATRIX_COLUMNS) == n_rows
    # The last row is NULL in every column, on both sides.
    nulls = " AND ".join(f"{c} IS NULL" for c in MATRIX_COLUMNS)
    assert fetchval(dbs.target, f"SELECT id FROM types_dst WHERE {nulls}") == n_rows


# --- Focused checks --------------------------------------------------------------------------

INTERVALS = [
    ("1 mon", "1 mon", "Interval(months=1, days=0, microseconds=0)"),
    (
        "1 year 2 mons 3 days 04:05:06.789",
        "1 year 2 mons 3 days 04:05:06.789",
        "Interval(months=14, days=3, microseconds=14706789000)",
    ),
    (
        "-1 year -2 mons +3 days -04:05:06.000001",
        "-1 years -2 mons +3 days -04:05:06.000001",
        "Interval(months=-14, days=3, microseconds=-14706000001)",
    ),
    ("30 days", "30 days", "Interval(months=0, days=30, microseconds=0)"),
    ("-00:00:00.000001", "-00:00:00.000001", "Interval(months=0, days=0, microseconds=-1)"),
]


@pytest.mark.parametrize("path", ALL_PATHS)
def test_interval_months_stay_months(dbs: Databases, path: str) -> None:
    """asyncpg's default codec folds ``1 mon`` into ``30 days``; pgferry's must not."""
    execute(dbs.source, "CREATE TABLE iv_src (id int PRIMARY KEY, iv interval)")
    for i, (given, _, _) in enumerate(INTERVALS, start=1):
        execute(dbs.source, "INSERT INTO iv_src VALUES ($1, $2::text::interval)", i, given)

    transform = None if path == "pipe" else WITH_REPRS
    ferry(dbs, path, "iv_src", "iv_dst", transform=transform)

    printed = [r[0] for r in fetch(dbs.target, "SELECT iv::text FROM iv_dst ORDER BY id")]
    assert printed == [shown for _, shown, _ in INTERVALS]
    # '1 mon' and '30 days' are equal as intervals but must stay apart.
    assert fetchval(dbs.target, "SELECT count(DISTINCT iv::text) FROM iv_dst") == len(INTERVALS)
    if path != "pipe":
        seen = [r[0] for r in fetch(dbs.target, "SELECT iv_repr FROM iv_dst ORDER BY id")]
        assert seen == [r for _, _, r in INTERVALS]
        assert column_types(dbs.target, "iv_dst") == [
            ("id", "integer"),
            ("iv", "interval"),
            ("iv_repr", "text"),
        ]


SENTINELS = [
    # (column, type, infinity, a real value next to it that must not become infinity)
    ("d", "date", "infinity", "9999-12-31"),
    ("ts", "timestamp", "infinity", "9999-12-31 23:59:59.999999"),
    ("tstz", "timestamptz", "infinity", "9999-12-31 23:59:59.999999+00"),
    ("md", "date", "-infinity", "0001-01-01"),
    ("mts", "timestamp", "-infinity", "0001-01-01 00:00:00"),
    ("mtstz", "timestamptz", "-infinity", "0001-01-01 00:00:00+00"),
    ("tm", "time", "24:00:00", "23:59:59.999999"),
]


@pytest.mark.parametrize("path", ROW_PATHS)
def test_infinities_stay_apart_from_the_largest_real_values(dbs: Databases, path: str) -> None:
    """``infinity`` and ``9999-12-31`` (or ``24:00`` and ``23:59:59.999999``) look alike in
    Python; the row path must still write each back as itself, and a transform must be able
    to tell them apart."""
    spec: list[tuple[str, str, list[str | Raw]]] = [
        (name, type_name, [special, real]) for name, type_name, special, real in SENTINELS
    ]
    build_table(dbs.source, "sentinel_src", spec)

    ferry(dbs, path, "sentinel_src", "sentinel_dst", transform=WITH_REPRS)

    names = [name for name, _, _, _ in SENTINELS]
    assert_same_rows(dbs, "sentinel_src", "sentinel_dst", names)
    reprs = fetch(
        dbs.target,
        f"SELECT {', '.join(f'{n}_repr' for n in names)} FROM sentinel_dst ORDER BY id",
    )
    special_row, real_row = reprs[0], reprs[1]
    for i, name in enumerate(names):
        assert special_row[i].startswith(("InfiniteDate", "EndOfDay")), (name, special_row[i])
        assert real_row[i].startswith("datetime."), (name, real_row[i])
    assert reprs[2] == tuple(["None"] * len(names))


@pytest.mark.parametrize("path", ALL_PATHS)
def test_multi_megabyte_values(dbs: Databases, path: str) -> None:
    mib = 1024 * 1024
    execute(
        dbs.source,
        "CREATE TABLE big_src (id int PRIMARY KEY, t text, b bytea, a text[]);"
        # 8 bytes per repetition: é (2) 🙂 (4) x (1) newline (1).
        f"INSERT INTO big_src SELECT 1, repeat('é🙂x' || chr(10), {5 * mib // 8}), "
        f"  convert_to(repeat('ab', {5 * mib // 2}), 'UTF8'), ARRAY[repeat('z', {2 * mib}), NULL];"
        "INSERT INTO big_src SELECT 2, repeat('y', 100), NULL, NULL;"
        "INSERT INTO big_src VALUES (3, NULL, NULL, NULL);",
    )
    assert fetchval(dbs.source, "SELECT octet_length(t) FROM big_src WHERE id = 1") == 5 * mib

    ferry(dbs, path, "big_src", "big_dst")

    query = (
        "SELECT id, octet_length(t), md5(t), octet_length(b), md5(b), md5(a::text) "
        "FROM {} ORDER BY id"
    )
    want = [tuple(r) for r in fetch(dbs.source, query.format("big_src"))]
    got = [tuple(r) for r in fetch(dbs.target, query.format("big_dst"))]
    assert got == want
    assert got[0][1] == 5 * mib and got[0][3] == 5 * mib


# --- Beyond the list: known gaps of the row path ----------------------------------

COMPOSITE_ARRAY_XFAIL = (
    "asyncpg decodes composite values as asyncpg.Record, and its array encoder takes a Record "
    "inside a list for a sub-array ('non-homogeneous array'); tuples work, so the pool path "
    "(which pickles Records as tuples) passes"
)


BOUNDED: list[tuple[str, str, list[str | Raw]]] = [
    ("a", "integer[]", ["{1,2}", "[0:2]={1,2,3}", "[-1:0][1:2]={{1,2},{3,NULL}}"]),
]


def test_array_lower_bounds_travel_exactly_on_the_pipe(dbs: Databases) -> None:
    build_table(dbs.source, "lb_src", BOUNDED)
    ferry(dbs, "pipe", "lb_src", "lb_dst")
    assert assert_same_rows(dbs, "lb_src", "lb_dst", ["a"]) == 4
    assert fetchval(dbs.target, "SELECT a::text FROM lb_dst WHERE id = 2") == "[0:2]={1,2,3}"


@pytest.mark.parametrize("path", ROW_PATHS)
def test_array_lower_bounds_are_refused_on_the_row_path(dbs: Databases, path: str) -> None:
    """Decoded rows cannot keep an array's lower bounds: such a value stops the run with an
    error naming the column, instead of arriving renumbered from 1."""
    build_table(dbs.source, "lb_src", BOUNDED)
    with pytest.raises(pgferry.ExtractError, match=r"numbered \[0:2\].*not from 1") as info:
        ferry(dbs, path, "lb_src", "lb_dst")
    assert info.value.column == "a"
    assert info.value.batch == 0
    assert not isinstance(info.value, pgferry.Transient)
    assert '"a"[:]' in str(info.value)
    assert fetchval(dbs.target, "SELECT to_regclass('lb_dst') IS NULL")


@pytest.mark.parametrize("path", ROW_PATHS)
def test_array_lower_bounds_found_in_a_later_batch(dbs: Databases, path: str) -> None:
    """The check is per value: the error names the batch where the array is, and nothing of
    that batch is written."""
    execute(dbs.target, "CREATE TABLE lb_dst (id int PRIMARY KEY, t text, m integer[])")
    spec: list[tuple[str, str, list[str | Raw]]] = [
        ("t", "text", ["x", "y", "z", "w", "v"]),
        # Bounds in the second dimension only, in the third batch (batch_size=2).
        ("m", "integer[]", ["{1}", "{{1,2}}", "{}", "[1:1][0:1]={{5,6}}", "{7}"]),
    ]
    build_table(dbs.source, "lb_src", spec)
    job = pgferry.Job(
        source={"dsn": dbs.source, "table": "lb_src", "key": ["id"]},
        target={"dsn": dbs.target, "table": "lb_dst"},
        batch_size=2,
        **PATH_SETTINGS[path],
    )
    with pytest.raises(pgferry.ExtractError, match=r"\[1:1\]\[0:1\]") as info:
        pgferry.run(job)
    assert (info.value.column, info.value.batch) == ("m", 1)
    # The run stops as on any read error: what the loader committed before the reader's
    # error won (batch 0, or nothing) stays; nothing from the refused batch is written.
    committed = [r[0] for r in fetch(dbs.target, "SELECT id FROM lb_dst ORDER BY id")]
    assert committed in ([], [1, 2])


@pytest.mark.parametrize("path", ROW_PATHS)
@pytest.mark.parametrize("domain", ["int_list", "short_list"])
def test_array_lower_bounds_inside_a_domain_are_refused(
    dbs: Databases, path: str, domain: str
) -> None:
    """A domain over an array, and a domain over that domain: their values are arrays too."""
    for dsn in (dbs.source, dbs.target):
        execute(dsn, "CREATE DOMAIN int_list AS integer[]")
        execute(dsn, "CREATE DOMAIN short_list AS int_list CHECK (cardinality(VALUE) < 5)")
    build_table(dbs.source, "lb_src", [("d", domain, ["{1,2}", "[5:5]={9}"])])
    with pytest.raises(pgferry.ExtractError, match=r"\[5:5\]") as info:
        ferry(dbs, path, "lb_src", "lb_dst")
    assert info.value.column == "d"


@pytest.mark.parametrize("path", ROW_PATHS)
def test_renumbered_arrays_pass_the_row_path(dbs: Databases, path: str) -> None:
    """The way out the error names: ``a[:]`` in a source query renumbers every dimension."""
    build_table(dbs.source, "lb_src", BOUNDED)
    job = pgferry.Job(
        source={"dsn": dbs.source, "query": "SELECT id, a[:] AS a FROM lb_src"},
        target={"dsn": dbs.target, "table": "lb_dst"},
        **PATH_SETTINGS[path],
    )
    assert pgferry.run(job).rows_written == 4
    got = [tuple(r) for r in fetch(dbs.target, "SELECT id, a::text FROM lb_dst ORDER BY id")]
    assert got == [(1, "{1,2}"), (2, "{1,2,3}"), (3, "{{1,2},{3,NULL}}"), (4, None)]


@pytest.mark.parametrize(
    "path",
    [
        "pipe",
        pytest.param(
            "rows-inline", marks=pytest.mark.xfail(strict=True, reason=COMPOSITE_ARRAY_XFAIL)
        ),
        "rows-pool",
    ],
)
def test_composite_types(dbs: Databases, path: str) -> None:
    for dsn in (dbs.source, dbs.target):
        execute(dsn, "CREATE TYPE pair AS (a int, b text, c interval)")
    spec: list[tuple[str, str, list[str | Raw]]] = [
        ("p", "pair", ['(1,"x, y","1 mon")', "(,,)"]),
        ("pa", "pair[]", ['{"(1,x,\\"1 mon\\")",NULL}', '{"(2,y,)"}']),
    ]
    build_table(dbs.source, "comp_src", spec)
    ferry(dbs, path, "comp_src", "comp_dst")
    assert column_types(dbs.target, "comp_dst") == column_types(dbs.source, "comp_src")
    assert assert_same_rows(dbs, "comp_src", "comp_dst", ["p", "pa"]) == 3


@pytest.mark.parametrize("path", ["pipe", "rows-inline", "rows-pool"])
def test_types_without_a_binary_codec(dbs: Databases, path: str) -> None:
    spec: list[tuple[str, str, list[str | Raw]]] = [
        ("m", "money", ["12.34", "-0.01"]),
        ("tv", "tsvector", ["a:1 b:2,3 'x y'"]),
        ("tq", "tsquery", ["a & (b | !c)"]),
        # Not an empty int2vector: PostgreSQL's own binary COPY writes it with no dimension,
        # and reading it back refuses that ("invalid int2vector data"). Cast it to text.
        ("iv", "int2vector", ["1 2 3", "-32768"]),
        ("ov", "oidvector", ["4 5 4294967295"]),
    ]
    build_table(dbs.source, "nb_src", spec)
    if path == "pipe":
        ferry(dbs, path, "nb_src", "nb_dst")
        assert assert_same_rows(dbs, "nb_src", "nb_dst", ["m", "tv", "tq", "iv", "ov"]) == 3
        return
    # asyncpg has no binary encoder for these types and copy_records_to_table writes binary
    # only: decoded rows cannot carry them, and the run says so before any row moves.
    with pytest.raises(pgferry.SchemaError, match="column 'm' has type money") as info:
        ferry(dbs, path, "nb_src", "nb_dst")
    assert info.value.column == "m"
    assert fetchval(dbs.target, "SELECT to_regclass('nb_dst') IS NULL")
    # asyncpg writes int2vector and oidvector as arrays numbered from 1, which the server
    # refuses ("invalid int2vector data"): refused up front too, with the cast that works.
    execute(dbs.source, "ALTER TABLE nb_src DROP COLUMN m, DROP COLUMN tv, DROP COLUMN tq")
    with pytest.raises(pgferry.SchemaError, match=r"type int2vector.*\(iv::int2\[\]\)"):
        ferry(dbs, path, "nb_src", "nb_dst")


@pytest.mark.parametrize("path", ["pipe", "rows-inline", "rows-pool"])
def test_dates_outside_python_range(dbs: Databases, path: str) -> None:
    spec: list[tuple[str, str, list[str | Raw]]] = [
        ("d", "date", ["4713-01-01 BC", "5874897-12-31"]),
        ("ts", "timestamp", ["0044-03-15 12:00 BC", "294276-12-31 23:59:59.999999"]),
        ("tstz", "timestamptz", ["0001-12-31 23:59:59+00 BC", "10000-01-01 00:00+00"]),
    ]
    build_table(dbs.source, "oor_src", spec)
    if path == "pipe":
        ferry(dbs, path, "oor_src", "oor_dst")
        assert assert_same_rows(dbs, "oor_src", "oor_dst", ["d", "ts", "tstz"]) == 3
        return
    # Python's datetime holds years 1 to 9999 only: decoding fails with a clear error and
    # nothing is written.
    with pytest.raises(pgferry.ExtractError, match="year") as info:
        ferry(dbs, path, "oor_src", "oor_dst")
    assert not isinstance(info.value, pgferry.Transient)
    assert fetchval(dbs.target, "SELECT to_regclass('oor_dst') IS NULL")


@pytest.mark.parametrize("path", ["pipe", "rows-inline"])
def test_a_type_the_target_database_lacks_is_named(dbs: Databases, path: str) -> None:
    """A domain or enum of the source's that the target database lacks: refused before any
    table is created, naming the column and what to do; once the types exist there, exact."""
    types = (
        "CREATE DOMAIN positive AS int CHECK (VALUE > 0); "
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')"
    )
    execute(dbs.source, types)
    build_table(dbs.source, "ut_src", [("p", "positive", ["1", "7"]), ("md", "mood", ["ok"])])
    with pytest.raises(pgferry.SchemaError, match="column 'p' has type positive") as info:
        ferry(dbs, path, "ut_src", "ut_dst")
    assert "create the type there first" in str(info.value)
    assert info.value.column == "p"
    assert fetchval(dbs.target, "SELECT to_regclass('ut_dst') IS NULL")
    execute(dbs.target, types)
    ferry(dbs, path, "ut_src", "ut_dst")
    assert column_types(dbs.target, "ut_dst") == column_types(dbs.source, "ut_src")
    assert assert_same_rows(dbs, "ut_src", "ut_dst", ["p", "md"]) == 3
    # A column added later with a type the target lacks: named too, and nothing changes.
    execute(dbs.source, "CREATE DOMAIN tiny AS int2; ALTER TABLE ut_src ADD COLUMN t tiny")
    with pytest.raises(pgferry.SchemaError, match="column 't' has type tiny"):
        ferry(dbs, path, "ut_src", "ut_dst")
    assert "t" not in dict(column_types(dbs.target, "ut_dst"))


@pytest.mark.parametrize("path", ["rows-inline"])
def test_a_domain_over_a_type_without_a_binary_codec_is_refused(dbs: Databases, path: str) -> None:
    """The rows lane looks under domains (at any depth) for the types it cannot write."""
    for dsn in (dbs.source, dbs.target):
        execute(dsn, "CREATE DOMAIN cash AS money; CREATE DOMAIN petty_cash AS cash")
    build_table(dbs.source, "dm_src", [("c", "petty_cash", ["12.34"])])
    with pytest.raises(pgferry.SchemaError, match=r"column 'c' has type petty_cash.*c::numeric"):
        ferry(dbs, path, "dm_src", "dm_dst")
    assert fetchval(dbs.target, "SELECT to_regclass('dm_dst') IS NULL")
    ferry(dbs, "pipe", "dm_src", "dm_dst")  # the pipe carries it undecoded
    assert assert_same_rows(dbs, "dm_src", "dm_dst", ["c"]) == 2
