"""The ``target.http`` section of a job: rows to a REST endpoint.

Kept apart from :mod:`pgferry.spec` (which nests :class:`HttpTarget` in ``Target``) so that the
HTTP knobs, their validation and the masking of secrets in headers and URLs live in one room.
Nothing here imports aiohttp: a job with an HTTP target validates without ``pgferry[http]``.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from pgferry.spec import Job

__all__ = [
    "SAFE_HEADERS",
    "HttpTarget",
    "check_http_job",
    "mask_headers",
    "mask_url",
    "parse_duration",
    "scrub",
]

Method = Literal["POST", "PUT", "PATCH"]
Format = Literal["json", "ndjson", "row"]

SAFE_HEADERS = frozenset(
    {"accept", "accept-encoding", "content-encoding", "content-type", "user-agent"}
)
"""Header names whose values are shown in reprs, logs and metadata; every other value is
masked, since APIs put credentials in headers of every name (``X-Api-Key``, ``Cookie``…)."""

_SECRET_PARAM = re.compile(r"(?i)(key|token|secret|password|passwd|pwd|auth|signature|sig)")
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*")
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def parse_duration(value: Any) -> float:
    """``30``, ``"30s"``, ``"500ms"``, ``"2m"``, ``"1h"`` as seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s or 500ms")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if m:
            scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2) or "s"]
            return float(m.group(1)) * scale
    raise ValueError(f"{value!r} is not a duration such as 30s, 500ms or 2m")


def mask_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Headers with every value outside :data:`SAFE_HEADERS` replaced by ``***``."""
    return {k: (v if k.lower() in SAFE_HEADERS else "***") for k, v in (headers or {}).items()}


def mask_url(url: str | None) -> str | None:
    """``url`` without a password and with secret-looking query values replaced by ``***``.

    Never fails: it runs while reporting errors.
    """
    if url is None:
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, host = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
        query = "&".join(
            f"{k}=***" if _SECRET_PARAM.search(k) else (f"{k}={v}" if sep else k)
            for k, sep, v in (p.partition("=") for p in parts.query.split("&") if p)
        )
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<unparsable URL>"


def _url_secrets(url: str) -> set[str]:
    """The password and the secret-looking query values of ``url``, as given and decoded."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return set()
    found = set()
    if parts.password:
        found.add(parts.password)
    for name, _, value in (p.partition("=") for p in parts.query.split("&") if p):
        if value and _SECRET_PARAM.search(name):
            found.add(value)
    return found | {urllib.parse.unquote(v) for v in found} | {urllib.parse.quote(v) for v in found}


def scrub(text: str, url: str) -> str:
    """``text`` (an error from the HTTP client, say) with the secrets of ``url`` replaced by
    ``***``, however the client rendered the URL (normalised, re-encoded, or in parts)."""
    for secret in sorted(_url_secrets(url), key=len, reverse=True):
        if len(secret) >= 3:  # "a" would mask every "a"; a 1-2 character secret is no secret
            text = text.replace(secret, "***")
    return text


Duration = Annotated[float, BeforeValidator(parse_duration)]


class HttpTarget(BaseModel):
    """Send rows to an HTTP endpoint (``target.http``).

    Attributes:
        url: The endpoint (``${VAR}`` is replaced from the environment in job files).
        method: ``POST``, ``PUT`` or ``PATCH``.
        headers: Sent with every request. Values are masked in every repr, log line, error and
            metadata entry, except for ``Content-Type``, ``Accept``, ``User-Agent`` and the
            encodings.
        format: ``json``: one JSON array of row objects per request; ``ndjson``: one object
            per line; ``row``: one object per request.
        rows_per_request: Rows in one request (``format: row`` sends one).
        concurrency: Requests in flight at once (and the connection pool's size).
        max_requests_per_second: A cap on the request rate over all senders (``None``: none).
        timeout: Total time one request may take (``30s``, ``500ms``, or seconds).
        retries: Retries of one request after a connection error, a timeout, a 429 or a 5xx.
        idempotency_header: The header carrying the request's idempotency key (``None``:
            send none).
        request: ``module:function`` building a request's body from its rows: it takes a list
            of row dicts and returns the body (``bytes``, ``str``, or a JSON-able value), or a
            ``(body, headers)`` pair.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str = Field(min_length=1)
    method: Method = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    format: Format = "json"
    rows_per_request: int = Field(default=500, ge=1, le=100_000)
    concurrency: int = Field(default=8, ge=1, le=1_000)
    max_requests_per_second: float | None = Field(default=None, gt=0)
    timeout: Duration = Field(default=30.0, gt=0)
    retries: int = Field(default=5, ge=0, le=100)
    idempotency_header: str | None = "Idempotency-Key"
    request: str | None = None

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{mask_url(value)!r} is not an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if "\n" in text or "\r" in text:
                raise ValueError(f"the value of header {name!r} contains a line break")
        return value

    @field_validator("idempotency_header")
    @classmethod
    def _idem_name(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid header name")
        return value

    @field_validator("request")
    @classmethod
    def _request_path(cls, value: str | None) -> str | None:
        if value is not None and not _IMPORT_PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not an import path of the form package.module:function")
        return value

    @property
    def rows_in_request(self) -> int:
        """Rows per request: ``rows_per_request``, or 1 for ``format: row``."""
        return 1 if self.format == "row" else self.rows_per_request

    def default_job_name(self) -> str:
        """A job name for jobs that give none: the endpoint's host and path."""
        parts = urllib.parse.urlsplit(self.url)
        return (parts.hostname or "http") + (parts.path.rstrip("/") or "")

    def describe(self) -> dict[str, Any]:
        """JSON-able, with secrets masked (for logs, XCom and metadata)."""
        data = self.model_dump(mode="json")
        data["url"] = mask_url(self.url)
        data["headers"] = mask_headers(self.headers)
        return data

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name == "headers":
                yield name, mask_headers(value)
            elif name == "url":
                yield name, mask_url(value)
            else:
                yield name, value


def check_http_job(job: Job) -> None:
    """What an HTTP target needs from the rest of the job."""
    # A source table's primary key is the default key (pgferry.keys, read at run time).
    if not job.read_key and job.source.table is None:
        raise ValueError(
            "an HTTP target needs source.key (or incremental.key): requests are formed from "
            "the rows in key order and named by their first and last keys, so that a retry or "
            "a rerun sends the same rows under the same idempotency key"
        )
    part = job.partition
    if part is not None and part.replace:
        raise ValueError("partition.replace deletes the slice from a table: not for HTTP targets")
    if isinstance(job.pipelines, int) and job.pipelines > 1:
        raise ValueError("an HTTP target runs one pipeline: set pipelines to 1 or 'auto'")
