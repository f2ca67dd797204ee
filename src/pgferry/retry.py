"""The one retry policy: which failures are transient, and how long to wait before trying again.

Every retry in pgferry goes through :class:`RetryPolicy`: a run's attempts, reaching the target
for the run's lock, the ``replace`` swap waiting for its lock, and HTTP requests. Retries never
nest: a step that retries on its own raises a terminal error once its own retries are spent, so
the run does not retry it again (the swap's lock wait used to run inside the run's retries, so
the two multiplied).

Why tenacity rather than stamina: the HTTP sink must honour a server's ``Retry-After`` hint, which
needs a wait computed from the failed attempt's exception; tenacity takes any wait callable (and
it is already in every Airflow installation), while stamina fixes the backoff formula.

Classification happens once, in :func:`is_transient`, and was tested against real failures
(``tests/integration/test_retry_classification.py``): a refused connection or a server restart is
transient; a bad certificate path, an unknown host name or a failed login is not.
"""

from __future__ import annotations

import errno
import logging
import random
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import asyncpg
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from pgferry.errors import PgferryError, Transient, TransientError

if TYPE_CHECKING:
    from pgferry.spec import Job

__all__ = ["RetryPolicy", "as_pgferry_error", "is_transient"]

log = logging.getLogger("pgferry")

T = TypeVar("T")

# SQLSTATEs that a retry of the same work may not meet again (besides class 08, connection).
TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "53000",  # insufficient_resources
        "53300",  # too_many_connections
        "55P03",  # lock_not_available
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
    }
)

# Socket errors of the network or of a peer that is restarting, not of the local set-up.
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENETRESET,
        errno.EAGAIN,
    }
)
# asyncpg's protocol states 1-4: failed, consuming an error, cancelled, terminating.
_BROKEN_PROTOCOL = re.compile(
    r"cannot switch to state \d+; (another operation \([234]\) is in progress"
    r"|protocol is in the .failed. state)"
)
# getaddrinfo: "temporary failure in name resolution" may pass; "name not known" will not.
_TRANSIENT_GAI = frozenset({socket.EAI_AGAIN})


def is_transient(exc: BaseException) -> bool:
    """True if the same work, tried again, may succeed.

    Transient: the :class:`~pgferry.errors.Transient` marker; PostgreSQL's connection errors
    (class 08), serialisation failures, deadlocks, lock timeouts, shutdowns and "too many
    connections"; a lost connection; timeouts; socket errors of the network or of a restarting
    peer (refused, reset, unreachable); a temporary DNS failure.

    Not transient: everything else, notably a failed login, a missing database, an unknown host
    name, a certificate file that does not exist or does not verify, and programming errors.
    """
    if isinstance(exc, Transient):
        return True
    if isinstance(exc, PgferryError):
        return False  # classified where it was raised
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state.startswith("08") or state in TRANSIENT_SQLSTATES
    if isinstance(exc, asyncpg.exceptions.ConnectionDoesNotExistError):
        return True
    if isinstance(exc, asyncpg.InternalClientError) and _BROKEN_PROTOCOL.search(str(exc)):
        # The next statement on a connection whose backend died between statements: the
        # protocol is still consuming the server's last error (or has failed, or is being
        # cancelled or closed), not busy with another statement of ours. A fresh connection
        # works; an operation of ours overlapping another (a bug) names a busy state (>= 10).
        return True
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.InternalClientError):
        # Cleaning up after a lost connection (the rollback of ``async with transaction()``)
        # fails with "another operation is in progress" or "connection is closed", and that
        # error replaces the one that happened first: the first one decides.
        first = exc.__context__
        if first is not None and first is not exc and is_transient(first):
            return True
    if isinstance(exc, asyncpg.InterfaceError):
        # "connection is closed" after the server went away; other interface errors are misuse.
        return "connection is closed" in str(exc) or "connection was closed" in str(exc)
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if isinstance(exc, socket.gaierror):
        return exc.errno in _TRANSIENT_GAI
    if isinstance(exc, ssl.SSLError):
        # A handshake cut short by the peer may pass; a certificate that fails will not.
        return isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError)
    if isinstance(exc, OSError):
        return exc.errno in _TRANSIENT_ERRNOS
    return False


def as_pgferry_error(exc: BaseException, job: str | None) -> PgferryError:
    """``exc`` as a :class:`PgferryError`: itself with the job filled in, or a wrapper that is
    :class:`~pgferry.errors.TransientError` where :func:`is_transient` says so."""
    if isinstance(exc, PgferryError):
        return exc.with_context(job=job)
    cls = TransientError if is_transient(exc) else PgferryError
    return cls(f"{type(exc).__name__}: {exc}", job=job)


class _Hinted(Protocol):
    retry_after: float | None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, a server's hint honoured, and a cap applied last.

    The wait before retry ``n`` (1-based) is ``initial * 2 ** (n - 1)``, scaled by a random
    factor in ``[1 - jitter, 1 + jitter]`` so that the retries of many tasks do not arrive
    together; a ``retry_after`` attribute (seconds) on the failure, such as an HTTP
    ``Retry-After``, raises it to at least that; then ``cap`` bounds it, so no wait is ever
    longer than ``cap``.

    Attributes:
        retries: Retries after the first try (``0``: try once).
        initial: The first wait, in seconds.
        cap: The longest wait, in seconds.
        jitter: The random spread of each wait, as a fraction of it.
    """

    retries: int = 3
    initial: float = 1.0
    cap: float = 60.0
    jitter: float = 0.5

    @classmethod
    def of(cls, job: Job) -> RetryPolicy:
        """The policy of a job's run attempts (``max_retries``, ``retry_backoff``)."""
        return cls(retries=job.max_retries, initial=job.retry_backoff)

    def wait_for(self, attempt: int, exc: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        delay = self.initial * 2.0 ** (attempt - 1)
        delay *= 1.0 - self.jitter + 2.0 * self.jitter * random.random()
        hint = getattr(exc, "retry_after", None)
        if isinstance(hint, int | float) and hint > delay:
            delay = float(hint)
        return max(0.0, min(self.cap, delay))

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        what: str,
        job: str | None = None,
        retry_on: Callable[[BaseException], bool] = is_transient,
    ) -> T:
        """Await ``fn()`` until it succeeds, retrying the failures ``retry_on`` accepts.

        Args:
            fn: Makes one try (called again for every retry).
            what: What is being tried, for the log ("attempt", "swap of x"…).
            job: The job's name, for the log.
            retry_on: Which failures to retry; others are raised at once.

        Raises:
            BaseException: The last failure, as it was raised, when it is not to be retried or
                the retries are spent.
        """

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            return self.wait_for(state.attempt_number, exc)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            seconds = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "%s%s: try %d failed (%s); retrying in %.1f s",
                f"job {job}: " if job else "",
                what,
                state.attempt_number,
                exc,
                seconds,
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait,
            retry=retry_if_exception(retry_on),
            before_sleep=before_sleep,
            reraise=True,
        )

        async def once() -> T:
            # tenacity awaits only what it sees is a coroutine function; ``fn`` may be a
            # lambda returning an awaitable.
            return await fn()

        return await retrying(once)
