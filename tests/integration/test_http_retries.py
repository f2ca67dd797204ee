"""HTTP targets under a misbehaving endpoint: latency, 429 storms, 5xx, timeouts, resets."""

from __future__ import annotations

import email.utils
import time
import traceback
from typing import Any

import pytest

import pgferry
from helpers import Databases, execute
from httpserver import ApiServer, Reply
from pgferry.httpsend import Limiter, parse_retry_after

ROWS = 600


def setup(dbs: Databases, rows: int = ROWS) -> None:
    execute(dbs.source, f"CREATE TABLE src AS SELECT g::bigint AS id, 'n' || g AS name "
                        f"FROM generate_series(1, {rows}) g")  # fmt: skip


def job(dbs: Databases, url: str, **http: Any) -> pgferry.Job:
    backoff = http.pop("retry_backoff", 0.01)
    return pgferry.Job.from_dict(
        {
            "name": "api",
            "source": {"dsn": dbs.source, "table": "src", "key": "id"},
            "target": {"http": {"url": url, "rows_per_request": 50, **http}},
            "state": {"dsn": dbs.target},
            "batch_size": 200,
            "retry_backoff": backoff,
            "workers": 0,
        }
    )


def delivered(api: ApiServer, rows: int = ROWS) -> None:
    assert sorted(api.rows) == list(range(1, rows + 1))
    assert api.duplicates == 0
    assert all(len(keys) == 1 for keys in api.keys_of.values())


@pytest.mark.slow  # timing
def test_latency_is_overlapped_by_concurrency(dbs: Databases) -> None:
    setup(dbs, 2_000)
    with ApiServer(latency=0.05) as api:
        start = time.perf_counter()
        pgferry.run(job(dbs, api.url, concurrency=8))
        elapsed = time.perf_counter() - start
    delivered(api, 2_000)
    # 40 requests of 50 ms each: one after the other they would take 2 s.
    assert api.max_in_flight == 8
    assert elapsed < 2.0


@pytest.mark.slow  # timing
def test_429_with_retry_after_seconds_pauses_every_sender(dbs: Databases) -> None:
    setup(dbs)
    with ApiServer() as api:
        api.script = [Reply(429, {"Retry-After": "1"})]
        start = time.perf_counter()
        pgferry.run(job(dbs, api.url, concurrency=4))
        elapsed = time.perf_counter() - start
        times = sorted(api.seen_times)
    delivered(api)
    assert elapsed >= 1.0
    # After the 429 no request of any sender came until the second had passed: the shared
    # limiter paused them all (only the ones already in flight arrive within it).
    first = times[0]
    within = [t for t in times if first + 0.05 < t < first + 0.95]
    assert len(within) <= 3, within


@pytest.mark.slow  # timing
def test_429_with_retry_after_date(dbs: Databases) -> None:
    setup(dbs)
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1 to 2 s away
    with ApiServer() as api:
        api.script = [Reply(429, {"Retry-After": when})]
        start = time.perf_counter()
        pgferry.run(job(dbs, api.url, concurrency=1))
        elapsed = time.perf_counter() - start
    delivered(api)
    assert elapsed >= 0.9


@pytest.mark.parametrize("hint", ["0", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_useless_retry_after_counts_as_no_hint(dbs: Databases, hint: str) -> None:
    setup(dbs)
    with ApiServer() as api:
        api.script = [Reply(429, {"Retry-After": hint}) for _ in range(3)]
        start = time.perf_counter()
        pgferry.run(job(dbs, api.url, concurrency=1, retry_backoff=0.02))
        elapsed = time.perf_counter() - start
    delivered(api)
    # Backoff only: 0.02 + 0.04 + 0.08 s at most 1.5 times each, nowhere near a hint.
    assert elapsed < 3.0
    assert api.statuses[429] == 3


def test_500s_are_retried(dbs: Databases) -> None:
    setup(dbs)
    with ApiServer() as api:
        api.script = [Reply(500, body="oops"), Reply(502), Reply(503), Reply(504)]
        result = pgferry.run(job(dbs, api.url, concurrency=2))
    delivered(api)
    assert result.attempts == 1 and result.rows_written == ROWS


def test_500s_past_the_retries_fail_the_run_with_the_response(dbs: Databases) -> None:
    setup(dbs)
    with ApiServer() as api:
        api.script = [Reply(500, body="database on fire") for _ in range(1_000)]
        gave_up = r"database on fire.*gave up after 3 tries"
        with pytest.raises(pgferry.LoadError, match=gave_up) as e:
            pgferry.run(job(dbs, api.url, concurrency=1, retries=2))
    assert not isinstance(e.value, pgferry.Transient)  # retries never nest
    assert api.rows == {}


def test_timeouts_are_retried(dbs: Databases) -> None:
    setup(dbs)
    with ApiServer() as api:
        api.script = [Reply(hang=2.0), Reply(hang=2.0)]
        result = pgferry.run(job(dbs, api.url, concurrency=1, timeout="300ms"))
    assert result.status == "success"
    assert sorted(api.rows) == list(range(1, ROWS + 1))
    # A request that timed out on the client may still have been applied by the server: the
    # retry carries the same key, so it is not applied twice.
    assert api.duplicates == 0


def test_connection_resets_are_retried(dbs: Databases) -> None:
    setup(dbs)
    with ApiServer() as api:
        api.script = [Reply(reset=True), Reply(reset=True), Reply(), Reply(reset=True)]
        pgferry.run(job(dbs, api.url, concurrency=2))
    delivered(api)


@pytest.mark.slow  # timing
def test_max_requests_per_second(dbs: Databases) -> None:
    setup(dbs, 500)
    with ApiServer() as api:
        pgferry.run(job(dbs, api.url, rows_per_request=25, max_requests_per_second=40))
        times = sorted(api.seen_times)
    delivered(api, 500)
    # 20 requests at 40/s: the first is free, the other 19 are spaced by 25 ms at least.
    assert times[-1] - times[0] >= 19 / 40 * 0.95


def test_wrong_credentials_fail_at_once(dbs: Databases) -> None:
    setup(dbs)
    with ApiServer() as api:
        api.script = [Reply(401, body="bad token") for _ in range(100)]
        with pytest.raises(pgferry.LoadError, match=r"HTTP 401.*credentials are wrong"):
            pgferry.run(job(dbs, api.url, concurrency=1))
    # Not retried, not split: the run stopped at the first answer (a few more requests of
    # other batches may have been under way).
    assert api.requests < 6


def test_parse_retry_after() -> None:
    now = time.time()
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    for useless in (None, "", "0", "-3", "nan", "inf", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"):
        assert parse_retry_after(useless, now) is None, useless
    later = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= (parse_retry_after(later, now) or 0) <= 30


async def test_limiter_pause_holds_every_acquirer() -> None:
    limiter = Limiter(None)
    limiter.pause(0.2)
    start = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - start >= 0.19


def test_client_errors_do_not_show_the_urls_secrets(dbs: Databases) -> None:
    """The client's errors name the URL their own way (a redirect loop's names the request
    with its password): neither the message nor the traceback shows the password or the
    token, and the error is not chained (a traceback would print the client's error whole)."""
    setup(dbs, 10)
    with ApiServer() as api:
        base = api.url.replace("http://", "http://user:pa55-w0rd@", 1)
        url = f"{base}?token=t0ken-value"
        loop = Reply(status=302, headers={"Location": url})
        api.script = [loop] * 50
        with pytest.raises(pgferry.PgferryError) as info:
            pgferry.run(job(dbs, url, retries=1).with_overrides(max_retries=0))
    shown = "".join(traceback.format_exception(info.value))
    assert "Redirect" in shown, shown
    assert "pa55-w0rd" not in shown and "t0ken-value" not in shown, shown
