"""Exactly-once loads: incremental positions, upsert, rejects, run history, locks, retries."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import asyncpg
import pytest

import pgferry
from helpers import Databases, execute, fetch, fetchval
from pgferry.errors import ConcurrentRunError, ConfigError, LoadError, SchemaError, TransformError

EVENTS = """
CREATE TABLE events (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, name text,
                     amount numeric(12,2));
INSERT INTO events
SELECT g, timestamptz '2024-01-01 00:00+00' + (g / 10) * interval '1 minute', 'n' || g, g * 1.5
FROM generate_series(1, 1000) g;
"""


def inc_job(dbs: Databases, **kw: object) -> pgferry.Job:
    data: dict[str, object] = {
        "name": "events",
        "source": {"dsn": dbs.source, "table": "events", "key": "id"},
        "target": {"dsn": dbs.target, "table": "events_copy"},
        "incremental": {"column": "updated_at"},
        "batch_size": 7,
    }
    for k, v in kw.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and k in data else v  # type: ignore[dict-item]
    return pgferry.Job.from_dict(data)


def same_rows(dbs: Databases, source: str = "events", target: str = "events_copy") -> bool:
    src = [tuple(r) for r in fetch(dbs.source, f"SELECT * FROM {source} ORDER BY id")]
    dst = [tuple(r) for r in fetch(dbs.target, f"SELECT * FROM {target} ORDER BY id")]
    return src == dst


@pytest.mark.parametrize("transform", [None, "ferry_transforms:identity"])
def test_incremental_reads_only_new_rows_with_ties(dbs: Databases, transform: str | None) -> None:
    execute(dbs.source, EVENTS)
    first = pgferry.run(inc_job(dbs, transform=transform))
    assert first.rows_written == 1000
    assert first.watermark_before is None
    assert first.watermark_after is not None and first.watermark_after.startswith(
        "2024-01-01 01:40"
    )
    assert same_rows(dbs)

    # Nothing new: nothing written, the watermark stays.
    again = pgferry.run(inc_job(dbs, transform=transform))
    assert (again.rows_read, again.rows_written) == (0, 0)
    assert again.watermark_before == again.watermark_after == first.watermark_after

    # New rows, some sharing the last watermark value (ties broken by the key), some later.
    execute(
        dbs.source,
        """
        INSERT INTO events SELECT g, timestamptz '2024-01-01 01:40+00', 'tie' || g, 0
        FROM generate_series(1001, 1013) g;
        INSERT INTO events SELECT g, timestamptz '2024-01-02 00:00+00', 'late' || g, 1
        FROM generate_series(1014, 1030) g;
    """,
    )
    third = pgferry.run(inc_job(dbs, transform=transform))
    assert third.rows_written == 30
    assert third.watermark_before == first.watermark_after
    assert third.watermark_after.startswith("2024-01-02 00:00:00")
    assert same_rows(dbs)
    ledger = fetch(dbs.target, "SELECT watermark FROM pgferry.ledger WHERE job = 'events'")
    assert ledger[0][0][1] == "1030"  # (updated_at, id) of the last row read


def test_incremental_initial_value(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    result = pgferry.run(
        inc_job(dbs, incremental={"column": "updated_at", "initial": "2024-01-01 01:00+00"})
    )
    assert result.rows_written == 1000 - 599
    assert fetchval(dbs.target, "SELECT min(id) FROM events_copy") == 600


def test_incremental_needs_a_key() -> None:
    # A query declares no key; a table's primary key is the default (tests/integration/test_keys).
    with pytest.raises(ConfigError, match="incremental needs a key"):
        pgferry.Job.from_dict(
            {
                "source": {"dsn": "x", "query": "SELECT 1 AS c"},
                "target": {"dsn": "x", "table": "t"},
                "incremental": {"column": "c"},
            }
        )


def test_upsert_collapses_versions_and_skips_unchanged(dbs: Databases) -> None:
    execute(
        dbs.source,
        """
        CREATE TABLE changes (seq int, id int, v text);
        INSERT INTO changes VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 1, 'a2'), (4, 3, 'c'),
                                   (5, 1, 'a3'), (6, 2, 'b2');
    """,
    )
    j = pgferry.Job.from_dict(
        {
            "name": "changes",
            "source": {"dsn": dbs.source, "query": "SELECT id, v FROM changes ORDER BY seq"},
            "target": {"dsn": dbs.target, "table": "current", "mode": "upsert", "key": "id"},
            "transform": "ferry_transforms:identity",
            "batch_size": 100,
        }
    )
    first = pgferry.run(j)
    assert [tuple(r) for r in fetch(dbs.target, "SELECT id, v FROM current ORDER BY id")] == [
        (1, "a3"),
        (2, "b2"),
        (3, "c"),
    ]
    assert first.rows_written == 3
    # pgferry created the unique key upsert needs.
    assert (
        fetchval(
            dbs.target,
            "SELECT count(*) FROM pg_index WHERE indrelid = 'current'::regclass AND indisunique",
        )
        == 1
    )
    xmins = fetch(dbs.target, "SELECT id, xmin::text FROM current ORDER BY id")
    second = pgferry.run(j)
    assert second.rows_written == 0  # unchanged rows are not rewritten
    assert fetch(dbs.target, "SELECT id, xmin::text FROM current ORDER BY id") == xmins
    execute(dbs.source, "INSERT INTO changes VALUES (7, 3, 'c2'), (8, 4, 'd')")
    third = pgferry.run(j)
    assert third.rows_written == 2
    assert (
        fetchval(dbs.target, "SELECT string_agg(v, ',' ORDER BY id) FROM current") == "a3,b2,c2,d"
    )


def test_upsert_pipe_and_sync_deletes(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    j = inc_job(dbs, incremental=None, target={"mode": "upsert", "key": "id", "sync_deletes": True})
    assert pgferry.run(j).rows_written == 1000
    execute(
        dbs.source,
        "DELETE FROM events WHERE id % 10 = 0; UPDATE events SET name = 'changed' WHERE id = 5",
    )
    result = pgferry.run(j)
    assert result.path == "pipe"
    assert result.rows_written == 1  # only the changed row
    assert result.rows_deleted == 100
    assert same_rows(dbs)


def test_upsert_needs_a_unique_index_on_an_existing_target(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    execute(
        dbs.target,
        "CREATE TABLE events_copy (id bigint, updated_at timestamptz, "
        "name text, amount numeric(12,2))",
    )
    with pytest.raises(SchemaError, match=r"no unique index on \(id\)"):
        pgferry.run(inc_job(dbs, incremental=None, target={"mode": "upsert", "key": "id"}))


def test_lookback_rereads_a_window_with_upsert(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    j = inc_job(
        dbs,
        target={"mode": "upsert", "key": "id"},
        incremental={"column": "updated_at", "lookback": "5 minutes"},
    )
    assert pgferry.run(j).rows_written == 1000
    # A row committed late with an old timestamp, inside the lookback window.
    execute(dbs.source, "INSERT INTO events VALUES (2000, '2024-01-01 01:37+00', 'late', 0)")
    result = pgferry.run(j)
    assert result.rows_read > 1  # the window was read again
    assert result.rows_written == 1  # but only the late row was new
    assert same_rows(dbs)


def test_rejects_go_to_the_dead_letter_table(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    execute(
        dbs.target,
        "CREATE TABLE events_copy (id bigint PRIMARY KEY, updated_at "
        "timestamptz, name varchar(4), amount numeric(12,2) CHECK (amount < 1400))",
    )
    j = inc_job(
        dbs,
        incremental=None,
        batch_size=100,
        max_rejects=1000,
        transform="ferry_transforms:identity",
        # The narrow target is the point: evolve would widen varchar(4) to the source's text.
        target={"schema_changes": "discard"},
    )
    result = pgferry.run(j)
    too_long = fetchval(dbs.source, "SELECT count(*) FROM events WHERE length(name) > 4")
    too_big = fetchval(
        dbs.source, "SELECT count(*) FROM events WHERE amount >= 1400 AND length(name) <= 4"
    )
    assert result.rows_rejected == too_long + too_big
    assert result.rows_written == 1000 - result.rows_rejected
    rejects = fetch(
        dbs.target,
        'SELECT stage, error_class, "column", row, run_id::text '
        "FROM pgferry.rejects ORDER BY (row->>'id')::int",
    )
    assert len(rejects) == result.rows_rejected
    by_id = {json.loads(r["row"])["id"]: r for r in rejects}
    assert set(by_id) == set(range(934, 1001))  # amount >= 1400 from id 934; name too long at 1000
    assert (by_id[1000]["stage"], by_id[1000]["error_class"], by_id[1000]["column"]) == (
        "load",
        "StringDataRightTruncationError",
        "name",
    )
    assert by_id[934]["error_class"] == "CheckViolationError"
    assert json.loads(by_id[934]["row"]) == {
        "id": 934,
        "updated_at": "2024-01-01 01:33:00+00:00",
        "name": "n934",
        "amount": "1401.00",
    }
    assert {r["run_id"] for r in rejects} == {result.run_id}
    assert {r["error_class"] for r in rejects} == {
        "StringDataRightTruncationError",
        "CheckViolationError",
    }


def test_first_bad_row_fails_naming_key_and_column(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    execute(
        dbs.target,
        "CREATE TABLE events_copy (id bigint, updated_at timestamptz, "
        "name varchar(4), amount numeric(12,2))",
    )
    with pytest.raises(LoadError) as info:
        pgferry.run(
            inc_job(dbs, incremental=None, batch_size=100, target={"schema_changes": "discard"})
        )
    # id 1..999 have names 'n1'..'n999' (fit); id 1000 is the first too long.
    assert "column 'name' of the row with id=1000" in str(info.value)
    assert info.value.column == "name"
    assert info.value.batch == 9
    assert fetchval(dbs.target, "SELECT count(*) FROM events_copy") == 900  # batches 0..8 kept


def test_reject_budget_exceeded_fails(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    j = inc_job(dbs, incremental=None, transform="ferry_transforms:fail_on_7", max_rejects=0.0001)
    with pytest.raises(LoadError, match=r"more than max_rejects=0\.0001"):
        pgferry.run(j)
    ok = pgferry.run(
        j.with_overrides(
            max_rejects=1, name="events2", target={**j.target.model_dump(), "table": ["t2"]}
        )
    )
    assert (ok.rows_written, ok.rows_rejected) == (999, 1)
    row = fetch(dbs.target, "SELECT stage, message, row FROM pgferry.rejects WHERE job = 'events2'")
    assert row[0]["stage"] == "transform"
    assert "seven is not allowed" in row[0]["message"]
    assert json.loads(row[0]["row"])["id"] == 7


def test_runs_are_recorded_also_when_failing(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    ok = pgferry.run(inc_job(dbs))
    with pytest.raises(TransformError):
        pgferry.run(
            inc_job(
                dbs,
                transform="ferry_transforms:fail_on_7",
                incremental=None,
                target={"table": "other"},
            )
        )
    runs = fetch(
        dbs.target,
        "SELECT run_id::text, status, rows_written, error FROM pgferry.runs ORDER BY started_at",
    )
    assert [(r["status"], r["rows_written"]) for r in runs] == [("success", 1000), ("failed", 0)]
    assert runs[0]["run_id"] == ok.run_id
    assert "seven is not allowed" in runs[1]["error"]


def test_concurrent_runs_of_one_job_wait_then_fail(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    pgferry.run(inc_job(dbs))  # creates the state schema

    held, release = threading.Event(), threading.Event()

    async def hold_lock() -> None:
        conn = await asyncpg.connect(dbs.target)
        try:
            await conn.execute(
                "SELECT pg_advisory_lock(hashtextextended($1, 0))", "pgferry:events\x1f"
            )
            held.set()
            await asyncio.to_thread(release.wait)
        finally:
            await conn.close()

    holder = threading.Thread(target=lambda: asyncio.run(hold_lock()))
    holder.start()
    try:
        assert held.wait(60), "the other session did not get the lock"
        start = time.monotonic()
        with pytest.raises(ConcurrentRunError, match="still active after 1 s"):
            pgferry.run(inc_job(dbs, lock_wait=1, max_retries=0))
        # It waited lock_wait, then gave up (the lock is held until `release`, so only
        # pgferry's own timeout can end the wait).
        assert 0.9 < time.monotonic() - start < 5
        # Another partition of the same job is not blocked.
        part = pgferry.run(
            inc_job(
                dbs,
                incremental=None,
                target={"table": "p1"},
                partition={"name": "p1", "column": "id", "upper": 100},
            )
        )
        assert part.rows_written == 99
    finally:
        release.set()
        holder.join()
    # Once the other run is gone, the job runs.
    assert pgferry.run(inc_job(dbs, lock_wait=1)).status == "success"


def test_partition_replace_is_idempotent(dbs: Databases) -> None:
    execute(dbs.source, EVENTS)
    window = {
        "name": "2024-01-01T00",
        "column": "updated_at",
        "lower": "2024-01-01 00:00+00",
        "upper": "2024-01-01 00:30+00",
        "replace": True,
    }
    j = inc_job(dbs, incremental=None, partition=window)
    first = pgferry.run(j)
    assert (first.rows_written, first.rows_deleted) == (299, 0)
    execute(
        dbs.source, "UPDATE events SET name = 'x' WHERE id = 10; DELETE FROM events WHERE id = 11"
    )
    again = pgferry.run(j)
    # The reload deleted the slice's 299 rows, and says so.
    assert (again.rows_written, again.rows_deleted) == (298, 299)
    assert fetchval(dbs.target, "SELECT count(*) FROM events_copy") == 298
    assert fetchval(dbs.target, "SELECT name FROM events_copy WHERE id = 10") == "x"


@pytest.mark.parametrize("transform", [None, "ferry_transforms:identity"])
def test_query_params_are_bound_and_converted(dbs: Databases, transform: str | None) -> None:
    execute(dbs.source, EVENTS)
    j = pgferry.Job.from_dict(
        {
            "source": {
                "dsn": dbs.source,
                "query": "SELECT * FROM events WHERE updated_at >= $1 AND updated_at < $2 "
                "AND name <> $3",
                "params": ["2024-01-01T00:10:00+00:00", "2024-01-01 00:20+00", "n150"],
            },
            "target": {"dsn": dbs.target, "table": "win"},
            "transform": transform,
        }
    )
    result = pgferry.run(j)
    assert result.rows_written == 99
    assert fetchval(dbs.target, "SELECT min(id)::text || '-' || max(id) FROM win") == "100-199"
    bad = j.with_overrides(source={**j.source.model_dump(), "params": ["yesterday", "x", "y"]})
    with pytest.raises(SchemaError, match=r"source.params\[0\] = 'yesterday' is not a valid"):
        pgferry.run(bad)
