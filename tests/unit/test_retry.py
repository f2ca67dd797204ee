"""pgferry.retry: the one policy's waits (cap applied last, hints honoured) and its retries."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl

import asyncpg
import pytest

from pgferry.errors import ConfigError, LoadError, TransientLoadError
from pgferry.retry import RetryPolicy, as_pgferry_error, is_transient


class Hinted(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__("hinted")
        self.retry_after = retry_after


@pytest.mark.parametrize("attempt", range(1, 12))
def test_wait_never_exceeds_the_cap_even_with_jitter(attempt: int) -> None:
    policy = RetryPolicy(retries=20, initial=1.0, cap=60.0, jitter=0.5)
    waits = [policy.wait_for(attempt) for _ in range(200)]
    assert max(waits) <= 60.0
    base = 2.0 ** (attempt - 1)
    assert min(waits) >= min(60.0, base * 0.5)


def test_wait_grows_exponentially_within_the_jitter() -> None:
    policy = RetryPolicy(initial=0.5, cap=1000.0, jitter=0.0)
    assert [policy.wait_for(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


def test_retry_after_hint_is_a_minimum_and_the_cap_still_wins() -> None:
    policy = RetryPolicy(initial=0.1, cap=30.0, jitter=0.0)
    assert policy.wait_for(1, Hinted(7.0)) == 7.0
    assert policy.wait_for(1, Hinted(None)) == 0.1
    assert policy.wait_for(1, Hinted(0.01)) == 0.1  # a smaller hint does not shorten the wait
    assert policy.wait_for(1, Hinted(3600.0)) == 30.0


def test_call_retries_transient_failures_then_succeeds() -> None:
    tries: list[int] = []

    async def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise TransientLoadError("connection lost")
        return "ok"

    policy = RetryPolicy(retries=5, initial=0.0, jitter=0.0)
    assert asyncio.run(policy.call(flaky, what="test")) == "ok"
    assert len(tries) == 3


def test_call_raises_a_terminal_failure_at_once() -> None:
    tries: list[int] = []

    async def broken() -> None:
        tries.append(1)
        raise LoadError("bad row")

    with pytest.raises(LoadError, match="bad row"):
        asyncio.run(RetryPolicy(retries=5, initial=0.0).call(broken, what="test"))
    assert len(tries) == 1


def test_call_gives_up_after_its_retries_with_the_last_error() -> None:
    tries: list[int] = []

    async def down() -> None:
        tries.append(1)
        raise ConnectionRefusedError(errno.ECONNREFUSED, f"refused {len(tries)}")

    with pytest.raises(ConnectionRefusedError, match="refused 3"):
        asyncio.run(RetryPolicy(retries=2, initial=0.0).call(down, what="test"))
    assert len(tries) == 3


def test_call_accepts_a_lambda_returning_a_coroutine() -> None:
    async def value() -> int:
        return 5

    assert asyncio.run(RetryPolicy().call(lambda: value(), what="test")) == 5


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True),
        (ConnectionResetError(errno.ECONNRESET, "reset"), True),
        (TimeoutError(), True),
        (OSError(errno.EHOSTUNREACH, "no route"), True),
        (FileNotFoundError(errno.ENOENT, "no such file: root.crt"), False),
        (PermissionError(errno.EACCES, "denied"), False),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), False),
        (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), True),
        (ssl.SSLCertVerificationError("certificate verify failed"), False),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), True),
        (asyncpg.exceptions.SerializationError("could not serialize"), True),
        (asyncpg.exceptions.InvalidPasswordError("password authentication failed"), False),
        (asyncpg.exceptions.UndefinedTableError("no such table"), False),
        (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"), True),
        (
            asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
            False,
        ),
        (ConfigError("bad job"), False),
        (ValueError("bad value"), False),
    ],
)
def test_classification(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_a_cleanup_failure_after_a_lost_connection_is_transient() -> None:
    def chained(first: BaseException, then: BaseException) -> BaseException:
        try:
            try:
                raise first
            except BaseException:
                raise then from None  # suppresses the cause, keeps the context
        except BaseException as exc:
            return exc

    busy = asyncpg.InternalClientError("another operation is in progress")
    lost = asyncpg.exceptions.AdminShutdownError("terminating connection")
    assert is_transient(chained(lost, busy))
    assert not is_transient(chained(ValueError("bad"), busy))
    assert not is_transient(busy)


def test_a_statement_on_a_connection_whose_backend_died_is_transient() -> None:
    """The backend was terminated between two statements: the next one finds the protocol
    still consuming the server's error (state 2), or failed. Busy with another statement of
    ours (a state >= 10) is a bug, not transient."""
    consuming = "cannot switch to state 15; another operation (2) is in progress"
    assert is_transient(asyncpg.InternalClientError(consuming))
    failed = 'cannot switch to state 15; protocol is in the "failed" state'
    assert is_transient(asyncpg.InternalClientError(failed))
    busy = "cannot switch to state 15; another operation (12) is in progress"
    assert not is_transient(asyncpg.InternalClientError(busy))


def test_as_pgferry_error_wraps_once_with_the_class_of_the_classification() -> None:
    wrapped = as_pgferry_error(ConnectionResetError(errno.ECONNRESET, "reset"), "j")
    assert is_transient(wrapped) and wrapped.job == "j"
    plain = as_pgferry_error(KeyError("x"), "j")
    assert not is_transient(plain)
    own = LoadError("mine")
    assert as_pgferry_error(own, "j") is own and own.job == "j"
