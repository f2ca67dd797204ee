"""Invariant 2 for HTTP targets: SIGKILL ``pgferry run`` at observed progress points, run again.

The endpoint honours idempotency keys (a key it accepted before is answered 200 and not applied
again). After every kill: the ledger never claims more than the endpoint has, and no row was
ever accepted under two different keys. At the end the rows the endpoint accepted equal the
source exactly.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from helpers import Databases, execute, fetchval
from httpserver import ApiServer, Reply
from killing import Killer, KillPoint

pytestmark = pytest.mark.slow

ROWS = 12_000


def write_job(tmp_path: Path, dbs: Databases, url: str, extra: str = "") -> Path:
    job = tmp_path / "job.yaml"
    job.write_text(
        f"name: killed\nsource: {{dsn: '{dbs.source}', table: src, key: id}}\n"
        f"target:\n  http: {{url: '{url}', rows_per_request: 100, concurrency: 4}}\n"
        f"state: {{dsn: '{dbs.target}'}}\nbatch_size: 500\nworkers: 0\nlock_wait: 30\n"
        f"retry_backoff: 0.01\n{extra}"
    )
    return job


def accepted(api: ApiServer, rows: int) -> KillPoint:
    """Once the endpoint has accepted ``rows`` rows."""
    return KillPoint.when(f"after {rows} rows accepted", lambda: len(api.rows) >= rows)


def check_consistent(api: ApiServer, dbs: Databases) -> None:
    assert api.duplicates == 0, "a row was accepted twice"
    assert all(len(keys) == 1 for keys in api.keys_of.values()), "a row under two keys"
    assert set(api.rows) <= set(range(1, ROWS + 1))
    progress = fetchval(dbs.target, "SELECT progress FROM pgferry.ledger WHERE job = 'killed'")
    if progress:
        # The ledger advanced only past batches the endpoint has whole.
        missing = set(range(1, int(progress[0]) + 1)) - set(api.rows)
        assert not missing, f"ledger at {progress[0]} but rows {sorted(missing)[:5]} never arrived"


def test_http_survives_kills_exactly_once(dbs: Databases, tmp_path: Path) -> None:
    execute(
        dbs.source,
        f"CREATE TABLE src AS SELECT g::bigint AS id, 'n' || g AS name, g * 0.25 AS amount "
        f"FROM generate_series(1, {ROWS}) g",
    )
    rnd = random.Random(20261201)
    with ApiServer(latency=0.01) as api:
        runs = Killer(write_job(tmp_path, dbs, api.url), dbs.target, "killed")
        for attempt in range(12):
            if attempt % 4 == 1:  # a 429 storm under way when the kill comes
                api.script = [Reply(429, {"Retry-After": "0.2"}) for _ in range(6)]
            runs.kill(accepted(api, min(ROWS, len(api.rows) + rnd.randint(0, 2_500))))
            check_consistent(api, dbs)
        runs.finish()
        check_consistent(api, dbs)
        assert sorted(api.rows) == list(range(1, ROWS + 1))
        assert api.rows[ROWS] == {"id": ROWS, "name": f"n{ROWS}", "amount": ROWS * 0.25}
        replays = api.replays
    # A kill can only miss when its point lies past the end of the rows left.
    assert len(runs.landed) >= 8, runs.landed
    print(f"\nHTTP kill test: {len(runs.landed)} kills ({runs.landed}); {replays} replayed "
          f"requests answered from the key store; 0 rows under two keys")  # fmt: skip
