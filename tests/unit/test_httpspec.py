"""target.http and state in the job spec: validation, defaults, masking of secrets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pgferry.errors import ConfigError
from pgferry.httpspec import HttpTarget, mask_headers, mask_url, parse_duration, scrub
from pgferry.spec import Job


def http_job(http: dict[str, Any], **extra: Any) -> Job:
    return Job.from_dict({"source": {"table": "s", "key": "id"}, "target": {"http": http}, **extra})


def test_defaults_and_name() -> None:
    job = http_job({"url": "https://api.example.com/v1/sensors/"})
    http = job.target.http
    assert http is not None
    assert (http.method, http.format, http.rows_per_request, http.concurrency) == (
        "POST", "json", 500, 8,
    )  # fmt: skip
    assert (http.timeout, http.retries, http.idempotency_header) == (30.0, 5, "Idempotency-Key")
    assert http.max_requests_per_second is None and http.request is None
    assert job.name == "api.example.com/v1/sensors"
    assert job.target.mode == "append" and job.target.table is None


@pytest.mark.parametrize(
    ("value", "seconds"), [(30, 30.0), ("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1.5", 1.5)]
)
def test_durations(value: Any, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("http", "extra", "message"),
    [
        ({"url": "ftp://x/y"}, {}, "target.http.url: 'ftp://x/y' is not an http"),
        ({"url": "https://x", "method": "GET"}, {}, "target.http.method"),
        ({"url": "https://x", "format": "csv"}, {}, "target.http.format"),
        ({"url": "https://x", "concurrency": 0}, {}, "target.http.concurrency"),
        ({"url": "https://x", "timeout": "soon"}, {}, "target.http.timeout"),
        ({"url": "https://x", "headers": {"Bad Name": "v"}}, {}, "not a valid header name"),
        ({"url": "https://x", "headers": {"X": "a\r\nb"}}, {}, "line break"),
        ({"url": "https://x", "request": "nocolon"}, {}, "target.http.request"),
        ({"url": "https://x"}, {"pipelines": 2, "workers": 0}, "one pipeline"),
        ({"url": "https://x"}, {"partition": {"name": "p", "column": "id", "replace": True}},
         "partition.replace"),
    ],
)  # fmt: skip
def test_invalid(http: dict[str, Any], extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        http_job(http, **extra)


def test_table_dsn_mode_are_refused_and_key_required() -> None:
    for key, value in (("table", "t"), ("dsn", "postgresql://x/y"), ("mode", "upsert")):
        with pytest.raises(ConfigError, match=f"target.{key}:"):
            Job.from_dict({"source": {"table": "s", "key": "id"},
                           "target": {"http": {"url": "https://x"}, key: value}})  # fmt: skip
    # A query has no primary key to default to: the key must be named.
    with pytest.raises(ConfigError, match=r"needs source\.key"):
        Job.from_dict(
            {"source": {"query": "SELECT 1 AS id"}, "target": {"http": {"url": "https://x"}}}
        )
    # A table's primary key is read at run time (pgferry.keys): no key needed here.
    job = Job.from_dict({"source": {"table": "s"}, "target": {"http": {"url": "https://x"}}})
    assert job.read_key in (None, [])


def test_secrets_are_masked_everywhere() -> None:
    job = http_job(
        {
            "url": "https://user:pw-secret@api.example.com/v1?api_key=key-secret&page=2",
            "headers": {"Authorization": "Bearer tok-secret", "X-Api-Key": "k-secret",
                        "Content-Type": "application/json"},
        },
        state={"dsn": "postgresql://me:db-secret@host/state"},
    )  # fmt: skip
    for text in (repr(job), str(job), json.dumps(job.describe())):
        assert "secret" not in text, text
    described = job.describe()["target"]["http"]
    assert described["headers"] == {
        "Authorization": "***", "X-Api-Key": "***", "Content-Type": "application/json"
    }  # fmt: skip
    assert described["url"] == "https://user:***@api.example.com/v1?api_key=***&page=2"
    assert mask_headers(None) == {}
    assert mask_url("not a url") == "not a url"
    assert "secret" not in repr(HttpTarget(url="https://x?token=secret"))


def test_scrub_removes_a_urls_secrets_however_rendered() -> None:
    url = "https://user:p%40ss-word@api.example.com/v1?api_key=k3y-value&page=2"
    rendered = (
        "ClientConnectorError(ConnectionKey(host='api.example.com', port=443), "
        "URL('https://user:p@ss-word@api.example.com/v1?api_key=k3y-value&page=2'), "
        "'p%40ss-word')"
    )
    scrubbed = scrub(rendered, url)
    assert "ss-word" not in scrubbed and "k3y-value" not in scrubbed
    assert "page=2" in scrubbed and "api.example.com" in scrubbed
    assert scrub("nothing secret", "https://api.example.com/v1") == "nothing secret"


def test_missing_aiohttp_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from pgferry.httpsend import import_aiohttp

    monkeypatch.setitem(sys.modules, "aiohttp", None)  # what an uninstalled package looks like
    with pytest.raises(ConfigError, match=r"pip install 'pgferry\[http\]'"):
        import_aiohttp()
