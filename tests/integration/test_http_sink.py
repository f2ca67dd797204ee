"""HTTP targets against a real local endpoint: delivery, formats, faithful JSON, state, rejects."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import pytest

import pgferry
from helpers import Databases, execute, fetch, fetchval
from httpserver import ApiServer, Reply

ROWS = 2_000
SETUP = f"""
CREATE TABLE src (id bigint PRIMARY KEY, name text, amount numeric(30,10), at timestamptz,
                  day date, raw bytea, uid uuid, doc jsonb, tags text[], ok boolean);
INSERT INTO src SELECT g, 'n' || g, g * 0.1 + 0.0000000001,
    timestamptz '2024-01-01 00:00+00' + g * interval '1 minute', date '2024-01-01' + g % 30,
    decode(lpad(to_hex(g), 8, '0'), 'hex'), md5(g::text)::uuid,
    jsonb_build_object('g', g, 'nested', jsonb_build_array(g, 'x')), ARRAY['a' || g, NULL],
    g % 2 = 0
FROM generate_series(1, {ROWS}) g;
"""


def http_job(dbs: Databases, url: str, **http: Any) -> pgferry.Job:
    extra = {k: http.pop(k) for k in list(http) if k in _JOB_KEYS}
    data: dict[str, Any] = {
        "name": "to_api",
        "source": {"dsn": dbs.source, "table": "src", "key": "id"},
        "target": {"http": {"url": url, **http}},
        "state": {"dsn": dbs.target},
        "batch_size": 300,
        "retry_backoff": 0.01,
        "workers": 0,
    }
    data.update(extra)
    return pgferry.Job.from_dict(data)


_JOB_KEYS = {"batch_size", "max_rejects", "transform", "incremental", "partition", "max_retries",
             "run_key", "queue_depth"}  # fmt: skip


def source_rows(dbs: Databases) -> dict[int, Any]:
    return {r["id"]: r for r in fetch(dbs.source, "SELECT * FROM src")}


def test_rows_arrive_once_with_faithful_json(dbs: Databases) -> None:
    execute(dbs.source, SETUP)
    with ApiServer() as api:
        result = pgferry.run(http_job(dbs, api.url, rows_per_request=70))
    assert result.status == "success"
    assert result.rows_written == result.rows_read == ROWS
    assert sorted(api.rows) == list(range(1, ROWS + 1))
    assert api.duplicates == 0 and api.replays == 0
    # One key per row, and requests of at most 70 rows: ceil(300/70) = 5 requests per batch.
    assert all(len(keys) == 1 for keys in api.keys_of.values())
    assert api.accepted_requests == 7 * 5 - 3 + 1  # 6 full batches of 5 requests, last of 200
    src = source_rows(dbs)
    row = api.rows[7]
    assert row == {
        "id": 7,
        "name": "n7",
        "amount": pytest.approx(0.7000000001),
        "at": "2024-01-01T00:07:00+00:00",
        "day": "2024-01-08",
        "raw": base64.b64encode(src[7]["raw"]).decode(),
        "uid": str(src[7]["uid"]),
        "doc": {"g": 7, "nested": [7, "x"]},
        "tags": ["a7", None],
        "ok": False,
    }
    # The ledger and the run history live in the state database.
    assert (
        fetchval(dbs.target, "SELECT rows_written FROM pgferry.ledger WHERE job='to_api'") == ROWS
    )
    assert fetchval(dbs.target, "SELECT status FROM pgferry.runs") == "success"
    assert fetchval(dbs.source, "SELECT to_regnamespace('pgferry') IS NULL")
    # ... which the CLI reads by that name.
    status = subprocess.run(
        [sys.executable, "-m", "pgferry", "status", "--state-dsn", dbs.target, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert [(r["job"], r["rows_written"]) for r in json.loads(status.stdout)] == [("to_api", ROWS)]


def test_numeric_digits_are_exact(dbs: Databases) -> None:
    execute(dbs.source, "CREATE TABLE src (id int PRIMARY KEY, v numeric, f float8)")
    execute(
        dbs.source,
        "INSERT INTO src VALUES (1, 12345678901234567890.123456789012345678, 0.1), "
        "(2, 'NaN', 'Infinity'), (3, -0.000000000000000001, -1e300)",
    )
    with ApiServer() as api:
        api.keep_bodies = True
        pgferry.run(http_job(dbs, api.url, format="ndjson"))
    text = b"".join(api.bodies).decode()
    assert '"v":12345678901234567890.123456789012345678' in text
    assert '"v":"NaN","f":"Infinity"' in text
    assert '"v":-1E-18,"f":-1e+300' in text


@pytest.mark.parametrize("fmt", ["json", "ndjson", "row"])
def test_formats(dbs: Databases, fmt: str) -> None:
    execute(dbs.source, "CREATE TABLE src AS SELECT g AS id, 'x' || g AS name "
                        "FROM generate_series(1, 25) g")  # fmt: skip
    with ApiServer() as api:
        api.keep_bodies = True
        pgferry.run(http_job(dbs, api.url, format=fmt, rows_per_request=10, method="put"))
    assert sorted(api.rows) == list(range(1, 26))
    kinds = {h.get("Content-Type") for h in api.headers_seen}
    if fmt == "json":
        assert api.accepted_requests == 3 and all(b.startswith(b"[") for b in api.bodies)
        assert kinds == {"application/json"}
    elif fmt == "ndjson":
        assert api.accepted_requests == 3 and kinds == {"application/x-ndjson"}
        assert api.bodies[0].count(b"\n") == 10
    else:
        assert api.accepted_requests == 25 and all(b.startswith(b"{") for b in api.bodies)


def test_headers_sent_and_masked(dbs: Databases, caplog: pytest.LogCaptureFixture) -> None:
    execute(dbs.source, "CREATE TABLE src AS SELECT g AS id FROM generate_series(1, 5) g")
    with ApiServer() as api:
        job = http_job(dbs, api.url, headers={"Authorization": "Bearer s3cret-token"})
        assert "s3cret" not in repr(job) and "s3cret" not in json.dumps(job.describe())
        api.script = [Reply(status=503, body="busy")]
        result = pgferry.run(job)
    assert api.headers_seen[0]["Authorization"] == "Bearer s3cret-token"
    assert len(api.headers_seen[0]["Idempotency-Key"]) == 40
    assert "s3cret" not in caplog.text and "s3cret" not in result.to_json()


def test_state_dsn_is_required(dbs: Databases) -> None:
    execute(dbs.source, "CREATE TABLE src AS SELECT g AS id FROM generate_series(1, 5) g")
    job = pgferry.Job.from_dict(
        {"source": {"dsn": dbs.source, "table": "src", "key": "id"},
         "target": {"http": {"url": "http://127.0.0.1:9/x"}}}
    )  # fmt: skip
    with pytest.raises(pgferry.ConfigError, match=r"needs state\.dsn"):
        pgferry.run(job)


def test_bad_rows_are_dead_lettered_while_the_rest_arrive(dbs: Databases) -> None:
    execute(dbs.source, SETUP)
    bad = {5, 6, 777, 1999}
    with ApiServer() as api:
        api.bad_ids = bad
        result = pgferry.run(http_job(dbs, api.url, rows_per_request=100, max_rejects=10))
    assert set(api.rows) == set(range(1, ROWS + 1)) - bad
    assert result.rows_written == ROWS - 4 and result.rows_rejected == 4
    rejects = fetch(
        dbs.target,
        "SELECT error_class, message, (row->>'id')::int AS id FROM pgferry.rejects ORDER BY 3",
    )
    assert [r["id"] for r in rejects] == sorted(bad)
    assert all(r["error_class"] == "HTTP 400" for r in rejects)
    assert "id=777" in rejects[2]["message"] and "invalid row" in rejects[2]["message"]
    # Every accepted row came under one key; halves of a refused request have their own keys.
    assert all(len(keys) == 1 for keys in api.keys_of.values())


def test_bad_row_over_budget_fails_naming_it(dbs: Databases) -> None:
    execute(dbs.source, SETUP)
    with ApiServer() as api:
        api.bad_ids = {42}
        with pytest.raises(pgferry.LoadError, match=r"id=42.*max_rejects") as info:
            pgferry.run(http_job(dbs, api.url))
    assert not isinstance(info.value, pgferry.Transient)


def test_incremental_sends_only_new_rows(dbs: Databases) -> None:
    execute(dbs.source, SETUP)
    with ApiServer() as api:
        job = http_job(dbs, api.url, incremental={"column": "at"})
        first = pgferry.run(job)
        execute(dbs.source, "INSERT INTO src (id, at) SELECT g, now() FROM "
                            "generate_series(5001, 5010) g")  # fmt: skip
        second = pgferry.run(job)
    assert first.rows_written == ROWS and second.rows_written == 10
    assert len(api.rows) == ROWS + 10 and api.replays == 0


def test_rerun_of_a_full_job_replays_the_same_keys(dbs: Databases) -> None:
    execute(dbs.source, SETUP)
    with ApiServer() as api:
        job = http_job(dbs, api.url)
        pgferry.run(job)
        accepted = api.accepted_requests
        pgferry.run(job)
        assert api.accepted_requests == accepted and api.replays == accepted
        # With a run key, the repeat is skipped outright.
        keyed = job.with_overrides(run_key="dag-run-1")
        assert pgferry.run(keyed).status == "success"
        assert pgferry.run(keyed).status == "skipped"
    assert api.duplicates == 0


def test_fanned_out_rows_are_sent_under_keys_of_their_own(dbs: Databases) -> None:
    """A transform that turns each row into two rows with the same key, one row a request:
    every request has a key of its own (the server would drop a repeated key as a replay),
    and a rerun names them alike."""
    execute(dbs.source, SETUP)
    with ApiServer() as api:
        job = http_job(
            dbs, api.url, rows_per_request=1, transform="ferry_transforms:fan_out", max_retries=0
        )
        assert pgferry.run(job).rows_written == 2 * ROWS
        assert api.accepted_requests == api.rows_received == 2 * ROWS
        assert api.replays == 0
        assert pgferry.run(job).rows_written == 2 * ROWS
        assert api.accepted_requests == 2 * ROWS and api.replays == 2 * ROWS


def test_mode_is_refused_for_http() -> None:
    with pytest.raises(pgferry.ConfigError, match="'mode' is not used for HTTP targets"):
        pgferry.Job.from_dict(
            {"source": {"table": "src", "key": "id"},
             "target": {"http": {"url": "http://x/y"}, "mode": "append"}}
        )  # fmt: skip


def test_request_hook_builds_bulk_bodies(dbs: Databases, tmp_path: Any, monkeypatch: Any) -> None:
    # An Elasticsearch _bulk style body: an action line before each document, and a header.
    (tmp_path / "bulk_hook.py").write_text(
        "from pgferry.httpjson import dumps\n\n"
        "def bulk(rows):\n"
        "    lines = []\n"
        "    for row in rows:\n"
        "        lines += [dumps({'index': {'_id': row['id']}}), dumps(row)]\n"
        "    return '\\n'.join(lines) + '\\n', {'Content-Type': 'application/x-ndjson',\n"
        "                                       'X-Rows': str(len(rows))}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    execute(dbs.source, "CREATE TABLE src AS SELECT g AS id, g * 1.5 AS v "
                        "FROM generate_series(1, 30) g")  # fmt: skip
    with ApiServer() as api:
        api.keep_bodies = True
        api.parse = False  # the body is not the rows alone
        result = pgferry.run(http_job(dbs, api.url, request="bulk_hook:bulk", rows_per_request=20))
    assert result.rows_written == 30
    first = min(api.bodies, key=len).decode().splitlines()  # the 10-row request: ids 21..30
    assert first[:2] == ['{"index":{"_id":21}}', '{"id":21,"v":31.5}']
    assert sorted(h["X-Rows"] for h in api.headers_seen) == ["10", "20"]
    assert {h["Content-Type"] for h in api.headers_seen} == {"application/x-ndjson"}
    assert all(len(h["Idempotency-Key"]) == 40 for h in api.headers_seen)
