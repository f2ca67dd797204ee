"""Type comparison of the schema step and duration settings, without a database."""

from __future__ import annotations

import pytest

from pgferry.engine.schema_step import Change, classify
from pgferry.errors import ConfigError
from pgferry.spec import Target

CASES = [
    # (incoming, target, verdict, type after)
    ("integer", "integer", "fits", "integer"),
    ("integer", "bigint", "fits", "bigint"),
    ("bigint", "integer", "rewrite", "bigint"),
    ("character varying(10)", "character varying(20)", "fits", "character varying(20)"),
    ("character varying(20)", "character varying(10)", "widen", "character varying(20)"),
    ("text", "character varying(10)", "widen", "text"),
    ("character varying", "character varying(10)", "widen", "character varying"),
    ("character(30)", "character varying(10)", "widen", "character varying(30)"),
    ("character varying(10)", "text", "fits", "text"),
    ("character varying(10)", "character(10)", "rewrite", "character varying(10)"),
    ("numeric(12,2)", "numeric(10,2)", "widen", "numeric(12,2)"),
    ("numeric(8,1)", "numeric(10,2)", "fits", "numeric(10,2)"),
    ("numeric(10,1)", "numeric(10,2)", "widen", "numeric(11,2)"),
    ("numeric(10,4)", "numeric(10,2)", "rewrite", "numeric(12,4)"),
    ("numeric", "numeric(10,2)", "widen", "numeric"),
    ("numeric(38,10)", "numeric", "fits", "numeric"),
    ("integer", "numeric(10,2)", "widen", "numeric(12,2)"),
    ("integer", "numeric(12,2)", "fits", "numeric(12,2)"),
    ("numeric(10,0)", "bigint", "rewrite", "numeric(10,0)"),
    ("real", "double precision", "fits", "double precision"),
    ("double precision", "real", "rewrite", "double precision"),
    ("timestamp with time zone", "timestamp without time zone", "rewrite",
     "timestamp with time zone"),
    ("timestamp(6) without time zone", "timestamp(3) without time zone", "widen",
     "timestamp(6) without time zone"),
    ("timestamp(3) without time zone", "timestamp without time zone", "fits",
     "timestamp without time zone"),
    ("character varying(5)[]", "character varying(10)[]", "fits", "character varying(10)[]"),
    ("jsonb", "text", "unknown", "text"),
    ("text", "jsonb", "unknown", "jsonb"),
    ("integer[]", "integer", "unknown", "integer"),
]  # fmt: skip


@pytest.mark.parametrize(("incoming", "target", "verdict", "after"), CASES)
def test_classify(incoming: str, target: str, verdict: str, after: str) -> None:
    assert classify(incoming, target) == (verdict, after)


def test_change_reports_as_a_dict_and_a_sentence() -> None:
    change = Change("b", "add column", None, "numeric(10,2)")
    assert change.as_dict() == {"column": "b", "change": "add column", "from": None,
                                "to": "numeric(10,2)"}  # fmt: skip
    assert str(change) == "new column 'b' numeric(10,2)"
    widen = Change("a", "change type", "integer", "bigint")
    assert widen.rewrite and str(widen) == "column 'a' integer -> bigint (needs a rewrite)"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(2, 2.0), ("2s", 2.0), ("500 ms", 0.5), ("5 minutes", 300.0), ("1.5", 1.5), ("1h", 3600.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert Target(table="t", lock_timeout=text).lock_timeout == seconds
    assert Target(table="t", terminate_blockers_after=text).terminate_blockers_after == seconds


def test_defaults_and_bad_durations() -> None:
    target = Target(table="t")
    assert (target.schema_changes, target.lock_timeout, target.allow_rewrite) == (
        "evolve", 2.0, False,
    )  # fmt: skip
    assert target.terminate_blockers_after is None
    for bad in ("soon", 0, "-1s", True):
        with pytest.raises(ConfigError, match="lock_timeout"):
            Target(table="t", lock_timeout=bad)
    with pytest.raises(ConfigError, match="schema_changes"):
        Target(table="t", schema_changes="migrate")
