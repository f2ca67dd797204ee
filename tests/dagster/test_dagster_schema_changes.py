"""Dagster reports schema evolution (#11 §5): the new ``dagster/column_schema`` and
``pgferry/schema_changes`` beside it."""

from __future__ import annotations

import dagster as dg
from dagster_support import materialization

from helpers import Databases, execute
from pgferry.dagster import PgferryResource, pgferry_asset


def test_materialisation_reports_the_new_schema_and_the_changes(dbs: Databases) -> None:
    execute(
        dbs.source,
        "CREATE TABLE drift (id int PRIMARY KEY, a varchar(10));"
        "INSERT INTO drift SELECT g, 'a' FROM generate_series(1, 20) g",
    )
    asset = pgferry_asset(name="drift", source_table="drift", target_table="drift", mode="upsert")
    resources = {"pgferry": PgferryResource(source_dsn=dbs.source, target_dsn=dbs.target)}
    first = materialization(dg.materialize([asset], resources=resources))
    assert first["pgferry/schema_changes"] == []
    execute(dbs.source, "ALTER TABLE drift ADD COLUMN b numeric(10,2), ALTER a TYPE text")
    again = materialization(dg.materialize([asset], resources=resources))
    assert again["pgferry/schema_changes"] == [
        {"column": "b", "change": "add column", "from": None, "to": "numeric(10,2)"},
        {"column": "a", "change": "widen type", "from": "character varying(10)", "to": "text"},
    ]
    schema = {c.name: c.type for c in again["dagster/column_schema"].columns}
    assert schema == {"id": "integer", "a": "text", "b": "numeric(10,2)"}
