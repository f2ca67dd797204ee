"""Sending requests: one aiohttp session per run, a shared limiter, retries, Retry-After.

:class:`Sender` owns the run's :class:`aiohttp.ClientSession` (its connection pool holds at most
``concurrency`` connections) and sends one request at a time per caller: every try waits for the
shared :class:`Limiter`, takes one of ``concurrency`` slots, and has a total timeout.

Outcomes of one request:

* 2xx: done.
* connection errors, timeouts, 408, 429 and 5xx: retried under the job's
  :class:`~pgferry.retry.RetryPolicy` (exponential backoff with jitter) with ``Retry-After``
  (seconds or an HTTP date) honoured as a minimum wait; ``Retry-After: 0``, a date in the past or
  a value that is neither count as no hint. A 429 also pauses the shared limiter, so that every
  sender slows down, not only the one that was told. When the retries are spent the run fails
  (it is not retried again as a whole: retries never nest).
* 401, 403, 404, 405, 407 and redirects that were not followed: the endpoint or the credentials
  are wrong, not the rows: the run fails at once.
* any other 4xx: :class:`HttpRejected`: the request's rows are refused (the sink splits them to
  find which).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pgferry.errors import ConfigError, LoadError, TransientLoadError
from pgferry.httpspec import HttpTarget, mask_url, scrub
from pgferry.retry import RetryPolicy, is_transient

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "HttpRejected",
    "HttpRetryable",
    "Limiter",
    "Sender",
    "import_aiohttp",
    "parse_retry_after",
]

log = logging.getLogger("pgferry")

EXCERPT = 500
"""Characters of a response body kept in errors and rejects."""

_RUN_FAILS = frozenset({401, 403, 404, 405, 407})
_RETRY_STATUS = frozenset({408, 429})


def import_aiohttp() -> Any:
    """aiohttp, or a clear error naming the extra that installs it."""
    try:
        import aiohttp
    except ImportError as exc:
        raise ConfigError(
            "HTTP targets need aiohttp: pip install 'pgferry[http]'", stage="load"
        ) from exc
    return aiohttp


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for; ``None`` for no (usable) hint.

    Accepts delta-seconds (``"120"``, also ``"1.5"``) and HTTP dates. ``0``, negative numbers,
    dates in the past and anything unparsable are no hint.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return seconds


class HttpRetryable(TransientLoadError):
    """A try failed in a way that may pass (connection, timeout, 408, 429, 5xx).

    Attributes:
        retry_after: The server's ``Retry-After``, in seconds, if it gave a usable one.
        status: The HTTP status, if a response came.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.retry_after = retry_after
        self.status = status


class HttpRejected(LoadError):
    """The server refused the request's rows (a 4xx other than 408/429 and the run-failing ones).

    Attributes:
        status: The HTTP status.
        reason: The reason phrase.
        excerpt: The start of the response body.
    """

    def __init__(
        self, message: str, *, status: int, reason: str, excerpt: str, **context: Any
    ) -> None:
        super().__init__(message, **context)
        self.status = status
        self.reason = reason
        self.excerpt = excerpt


class Limiter:
    """Spaces the tries of every sender: a rate cap, and a shared pause after a 429.

    Args:
        rate: Requests per second over all senders (``None``: no cap).
    """

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._paused_until = 0.0
        self.pauses = 0

    def pause(self, seconds: float) -> None:
        """Hold every sender back for ``seconds`` from now (a 429 told one of them)."""
        until = time.monotonic() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self.pauses += 1

    async def acquire(self) -> None:
        """Wait for the pause to end and for the next free slot of the rate."""
        while True:
            now = time.monotonic()
            wait = max(self._paused_until - now, self._next - now)
            if wait <= 0:
                if self.interval:
                    self._next = max(now, self._next) + self.interval
                return
            await asyncio.sleep(wait)


class Sender:
    """Sends bodies to one endpoint for one run.

    Args:
        http: The target's settings.
        job: The job name (for errors and logs).
        backoff: The first wait between tries, in seconds (the job's ``retry_backoff``).
    """

    def __init__(self, http: HttpTarget, *, job: str, backoff: float) -> None:
        self.http = http
        self.job = job
        self.policy = RetryPolicy(retries=http.retries, initial=backoff)
        self.limiter = Limiter(http.max_requests_per_second)
        self.slots = asyncio.Semaphore(http.concurrency)
        self.shown_url = mask_url(http.url)
        self.requests = 0
        self.tries = 0
        self._session: aiohttp.ClientSession | None = None
        self._aiohttp = import_aiohttp()

    async def start(self) -> None:
        """Open the session (once per run)."""
        if self._session is None:
            aiohttp = self._aiohttp
            connector = aiohttp.TCPConnector(limit=self.http.concurrency, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self.http.headers,
                timeout=aiohttp.ClientTimeout(total=self.http.timeout),
                # Secrets stay out of aiohttp's own logging of URLs; bodies are bytes already.
                raise_for_status=False,
            )

    async def close(self) -> None:
        """Close the session and its connections."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, body: bytes, headers: Mapping[str, str], *, batch: int) -> None:
        """Send one request until it succeeds, retrying what may pass.

        Raises:
            HttpRejected: The server refused the rows (the caller splits them).
            LoadError: The retries are spent, or the endpoint or credentials are wrong.
        """
        attempt = 0

        async def once() -> None:
            nonlocal attempt
            attempt += 1
            await self._try(body, headers, batch=batch, attempt=attempt)

        try:
            await self.policy.call(
                once,
                what=f"a request to {self.shown_url} (batch {batch})",
                job=self.job,
                retry_on=is_transient,
            )
        except HttpRetryable as exc:
            raise LoadError(
                f"{exc.message}; gave up after {attempt} tries (target.http.retries="
                f"{self.http.retries})",
                job=self.job,
                batch=batch,
            ) from exc
        self.requests += 1

    async def _try(
        self, body: bytes, headers: Mapping[str, str], *, batch: int, attempt: int
    ) -> None:
        aiohttp = self._aiohttp
        session = self._session
        assert session is not None, "Sender.start() first"
        await self.limiter.acquire()
        async with self.slots:
            self.tries += 1
            try:
                async with session.request(
                    self.http.method,
                    self.http.url,
                    data=body,
                    headers=headers,
                    allow_redirects=True,
                ) as resp:
                    status = resp.status
                    if 200 <= status < 300:
                        await resp.read()
                        return
                    excerpt = await _excerpt(resp)
                    reason = resp.reason or ""
                    retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                # The URL as given may hold a password or a token, and the client's error
                # renders it its own way: the message shows the masked URL and the client's
                # error scrubbed of the secrets, and the error itself is not chained (a
                # traceback would print it whole).
                what = f"failed: {exc!r}".replace(self.http.url, str(self.shown_url))
                what = scrub(what, self.http.url)
                if isinstance(exc, TimeoutError):
                    what = f"timed out after {self.http.timeout:g} s"
                raise HttpRetryable(
                    f"{self.http.method} {self.shown_url} {what}", job=self.job, batch=batch
                ) from None
        said = f"{self.http.method} {self.shown_url}: HTTP {status} {reason}: {excerpt}"
        if status in _RETRY_STATUS or status >= 500:
            hint = parse_retry_after(retry_after)
            if status == 429:
                self.limiter.pause(hint if hint is not None else self.policy.wait_for(attempt))
            raise HttpRetryable(said, retry_after=hint, status=status, job=self.job, batch=batch)
        if status in _RUN_FAILS or not 400 <= status < 500:
            raise LoadError(
                f"{said} (the endpoint or its credentials are wrong, not the rows)",
                job=self.job,
                batch=batch,
            )
        raise HttpRejected(
            said, status=status, reason=reason, excerpt=excerpt, job=self.job, batch=batch
        )


async def _excerpt(resp: Any) -> str:
    try:
        raw: bytes = await resp.content.read(EXCERPT * 4)
    except Exception:  # the body is only for the message
        return ""
    text = raw.decode("utf-8", "replace")
    return text[:EXCERPT]
