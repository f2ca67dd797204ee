"""pgferry.sql: identifier quoting, table names, type names and statement text."""

from __future__ import annotations

import random

import pytest

from pgferry import sql
from pgferry.errors import ConfigError
from pgferry.sql import TableName, check_type_name, quote_ident
from pgferry.sql_bounds import array_bounds_probe

# --- quote_ident -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("orders", '"orders"'),
        ("Orders", '"Orders"'),
        ("my table", '"my table"'),
        ('we"ird', '"we""ird"'),
        ('x"; DROP TABLE y; --', '"x""; DROP TABLE y; --"'),
        ('"', '""""'),
        ("café", '"café"'),
        ("表", '"表"'),
        ("a" * 63, '"' + "a" * 63 + '"'),
    ],
)
def test_quote_ident(name: str, quoted: str) -> None:
    assert quote_ident(name) == quoted


def test_quote_ident_rejects_empty() -> None:
    with pytest.raises(ConfigError, match="empty"):
        quote_ident("")


def test_quote_ident_rejects_nul() -> None:
    with pytest.raises(ConfigError, match="NUL"):
        quote_ident("a\x00b")


def test_quote_ident_rejects_names_longer_than_63_bytes() -> None:
    with pytest.raises(ConfigError, match="63-byte"):
        quote_ident("a" * 64)


def test_quote_ident_counts_bytes_not_characters() -> None:
    # 32 two-byte characters = 64 bytes: PostgreSQL would truncate this name.
    assert len("é" * 32) == 32
    with pytest.raises(ConfigError, match="63-byte"):
        quote_ident("é" * 32)
    assert quote_ident("é" * 31) == '"' + "é" * 31 + '"'


def test_config_error_from_quote_ident_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        quote_ident("")


# --- TableName.parse ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "schema", "name"),
    [
        ("orders", None, "orders"),
        ("ORDERS", None, "orders"),
        ("public.Orders", "public", "orders"),
        ("Public.ORDERS", "public", "orders"),
        (" public . orders ", "public", "orders"),
        ("a$b._x1", "a$b", "_x1"),
        ('"Orders"', None, "Orders"),
        ('public."Orders"', "public", "Orders"),
        ('"Mixed Case"."we""ird; --"', "Mixed Case", 'we"ird; --'),
        ('"a.b"."c.d"', "a.b", "c.d"),
        ('"x""; DROP TABLE y; --"', None, 'x"; DROP TABLE y; --'),
        ('"café"', None, "café"),
    ],
)
def test_parse_text(text: str, schema: str | None, name: str) -> None:
    assert TableName.parse(text) == TableName(schema, name)


def test_parse_list_is_taken_literally() -> None:
    t = TableName.parse(["s", 'x"; DROP TABLE y; --'])
    assert t == TableName("s", 'x"; DROP TABLE y; --')
    assert t.sql == '"s"."x""; DROP TABLE y; --"'


def test_parse_list_does_not_fold_or_unquote() -> None:
    assert TableName.parse(["Mixed Case", '"Q"']) == TableName("Mixed Case", '"Q"')
    assert TableName.parse(("ORDERS",)) == TableName(None, "ORDERS")


def test_parse_accepts_a_table_name() -> None:
    t = TableName("s", "t")
    assert TableName.parse(t) is t


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a.b.c", "one or two parts"),
        ("my table", "'my table'"),
        ('"unterminated', "unterminated quoted identifier"),
        ("a..b", "double quotes"),
        ("", "cannot parse table name ''"),
        ("   ", "cannot parse table name"),
        ("a.", "cannot parse table name"),
        (".a", "cannot parse table name"),
        ('""', "empty"),
        ("t;", "unexpected ';'"),
        ('"a"b', "unexpected 'b'"),
        ('"' + "x" * 64 + '"', "63-byte"),
    ],
)
def test_parse_rejects_invalid_text(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        TableName.parse(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "parts",
    [[], ["a", "b", "c"], ["", "x"], ["s", ""], ["s", "a\x00"]],
)
def test_parse_rejects_invalid_lists(parts: list[str]) -> None:
    with pytest.raises(ConfigError):
        TableName.parse(parts)


def test_invalid_text_message_explains_how_to_quote() -> None:
    with pytest.raises(ConfigError) as info:
        TableName.parse("a..b")
    message = str(info.value)
    assert "'a..b'" in message
    assert "give the parts as a list" in message


# --- .sql and str() ----------------------------------------------------------------------------


def test_sql_quotes_every_part() -> None:
    assert TableName(None, "orders").sql == '"orders"'
    assert TableName("public", "orders").sql == '"public"."orders"'
    assert TableName("Mixed Case", 'we"ird; --').sql == '"Mixed Case"."we""ird; --"'


def test_sibling_keeps_the_schema() -> None:
    assert TableName("s", "t").sibling("t_shadow") == TableName("s", "t_shadow")
    assert TableName(None, "t").sibling("u") == TableName(None, "u")


@pytest.mark.parametrize(
    ("table", "text"),
    [
        (TableName(None, "orders"), "orders"),
        (TableName("public", "orders"), "public.orders"),
        (TableName("public", "Orders"), 'public."Orders"'),
        (TableName("Mixed Case", 'we"ird; --'), '"Mixed Case"."we""ird; --"'),
        (TableName("s", "a.b"), 's."a.b"'),
    ],
)
def test_str(table: TableName, text: str) -> None:
    assert str(table) == text


ROUND_TRIP = [
    TableName(None, "orders"),
    TableName(None, "_x$1"),
    TableName(None, "select"),
    TableName("public", "orders"),
    TableName("public", "Orders"),
    TableName("Public", "orders"),
    TableName("Mixed Case", 'we"ird; --'),
    TableName("s", 'x"; DROP TABLE y; --'),
    TableName("a.b", "c.d"),
    TableName("s", '"'),
    TableName("s", '""'),
    TableName("s", " leading"),
    TableName("s", "trailing "),
    TableName("s", "1starts_with_digit"),
    TableName("café", "表"),
    TableName("s", "x" * 63),
]


@pytest.mark.parametrize("table", ROUND_TRIP, ids=repr)
def test_str_round_trip(table: TableName) -> None:
    assert TableName.parse(str(table)) == table


@pytest.mark.parametrize("table", ROUND_TRIP, ids=repr)
def test_sql_round_trip(table: TableName) -> None:
    assert TableName.parse(table.sql) == table


def _random_names(count: int) -> list[TableName]:
    # hypothesis is not installed; a seeded generator gives the same cases every run.
    rng = random.Random(20240601)
    alphabet = 'abcXYZ_09$ ."-;é表\t'
    names = []
    for _ in range(count):
        parts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in "ab"]
        names.append(TableName(parts[0], parts[1]))
    return names


def test_str_and_sql_round_trip_random_qualified_names() -> None:
    for table in _random_names(500):
        assert TableName.parse(str(table)) == table, table
        assert TableName.parse(table.sql) == table, table


@pytest.mark.parametrize(
    "name", ["Orders", "Mixed Case", 'x"; DROP TABLE y; --', "a.b", "1st", " sp"]
)
def test_str_round_trip_unqualified_names_that_need_quotes(name: str) -> None:
    table = TableName(None, name)
    assert TableName.parse(str(table)) == table


# --- check_type_name ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "type_name",
    [
        "integer",
        "bigint",
        "numeric(38,10)",
        "numeric(38, 10)",
        "timestamp(3) with time zone",
        "timestamp without time zone",
        "double precision",
        '"My Type"[]',
        'public."My Type"',
        "character varying(20)[]",
        "text[][]",
        "jsonb",
    ],
)
def test_check_type_name_accepts(type_name: str) -> None:
    assert check_type_name(type_name) == type_name


def test_check_type_name_strips_whitespace() -> None:
    assert check_type_name("  bigint ") == "bigint"


@pytest.mark.parametrize(
    "type_name",
    [
        "int; DROP TABLE x",
        "text -- x",
        "text--x",
        'a"b',
        "",
        "   ",
        "1int",
        "text/*x*/",
        "text'",
        "int\x00",
    ],
)
def test_check_type_name_rejects(type_name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid PostgreSQL type name"):
        check_type_name(type_name)


@pytest.mark.parametrize("type_name", ["text, extra int", "numeric(38", "int) AS x, (y"])
def test_check_type_name_rejects_text_that_is_not_one_type(type_name: str) -> None:
    with pytest.raises(ConfigError):
        check_type_name(type_name)


# --- statements --------------------------------------------------------------------------------


def test_select_with_casts() -> None:
    text = sql.select_with_casts("SELECT 1 AS a, 2 AS b", [("a", "bigint"), ("b", None)])
    assert text == 'SELECT "a"::bigint AS "a", "b" FROM (SELECT 1 AS a, 2 AS b) AS pgferry_src'


def test_select_with_casts_quotes_names_and_checks_types() -> None:
    text = sql.select_with_casts("SELECT 1", [('x"; --', "numeric(38,10)")])
    assert text == 'SELECT "x""; --"::numeric(38,10) AS "x""; --" FROM (SELECT 1) AS pgferry_src'
    with pytest.raises(ConfigError):
        sql.select_with_casts("SELECT 1", [("a", "int; DROP TABLE x")])


def test_select_from_table() -> None:
    text = sql.select_from_table(TableName("s", "T"), ["id", "My Col"])
    assert text == 'SELECT "id", "My Col" FROM "s"."T"'


def test_create_table() -> None:
    text = sql.create_table(
        TableName("Mixed Case", 'we"ird'), [("id", "bigint"), ("My Col", "numeric(38,10)")]
    )
    assert text == 'CREATE TABLE "Mixed Case"."we""ird" ("id" bigint, "My Col" numeric(38,10))'


def test_create_table_rejects_bad_type() -> None:
    with pytest.raises(ConfigError):
        sql.create_table(TableName(None, "t"), [("a", "int; DROP TABLE x")])


def test_create_table_rejects_bad_column_name() -> None:
    with pytest.raises(ConfigError):
        sql.create_table(TableName(None, "t"), [("", "int")])


@pytest.mark.parametrize(
    ("grantee", "with_grant", "expected"),
    [
        (None, False, 'GRANT SELECT ON "s"."t" TO PUBLIC'),
        ("bob", False, 'GRANT SELECT ON "s"."t" TO "bob"'),
        ('b"ob', True, 'GRANT SELECT ON "s"."t" TO "b""ob" WITH GRANT OPTION'),
    ],
)
def test_grant(grantee: str | None, with_grant: bool, expected: str) -> None:
    assert sql.grant(TableName("s", "t"), "SELECT", grantee, with_grant) == expected


@pytest.mark.parametrize(
    "privilege",
    ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"],
)
def test_grant_accepts_table_privileges(privilege: str) -> None:
    assert sql.grant(TableName(None, "t"), privilege, None, False).startswith(
        f"GRANT {privilege} ON "
    )


@pytest.mark.parametrize(
    "privilege", ["ALL", "select", "SELECT; DROP TABLE x", "USAGE", "", "SELECT, INSERT"]
)
def test_grant_rejects_unknown_privileges(privilege: str) -> None:
    with pytest.raises(ConfigError, match="unexpected privilege"):
        sql.grant(TableName(None, "t"), privilege, None, False)


def test_other_statements_quote_identifiers() -> None:
    t = TableName("s", "T")
    assert sql.drop_table(t) == 'DROP TABLE IF EXISTS "s"."T"'
    assert sql.rename_table(t, 'n"ew') == 'ALTER TABLE "s"."T" RENAME TO "n""ew"'
    assert sql.lock_table(t) == 'LOCK TABLE "s"."T" IN ACCESS EXCLUSIVE MODE'
    assert sql.create_table_like(t, TableName(None, "u")) == (
        'CREATE TABLE "s"."T" (LIKE "u" INCLUDING ALL)'
    )
    assert sql.rename_index("s", "i", "j") == 'ALTER INDEX "s"."i" RENAME TO "j"'
    assert sql.rename_constraint(t, "c", "d") == (
        'ALTER TABLE "s"."T" RENAME CONSTRAINT "c" TO "d"'
    )


def test_array_bounds_probe_quotes_columns_and_is_the_last_column() -> None:
    probe = array_bounds_probe(["a", 'x"; DROP TABLE y; --'])
    weird = '"x""; DROP TABLE y; --"'
    assert probe == (
        """CASE WHEN strpos(replace(array_dims("a"), '[1:', ''), '[') > 0 """
        """THEN '0 ' || array_dims("a") """
        f"WHEN strpos(replace(array_dims({weird}), '[1:', ''), '[') > 0 "
        f"THEN '1 ' || array_dims({weird}) END"
        ' AS "pgferry: array bounds"'
    )
    query = sql.ordered_source("SELECT 1", ["id", "a"], where=["x"], order_by=["id"], probe=probe)
    assert (
        query == f'SELECT "id", "a", {probe} FROM (SELECT 1) AS pgferry_src WHERE (x) ORDER BY "id"'
    )
