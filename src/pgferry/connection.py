"""Connections: timeouts, codecs that round-trip exactly, and error classification."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from typing import Any, NamedTuple

import asyncpg

from pgferry.errors import (
    ConfigError,
    ConnectError,
    PgferryError,
    Transient,
    TransientConnectError,
)
from pgferry.spec import mask_dsn

__all__ = ["Interval", "close_quietly", "connect", "is_transient_pg_error"]

log = logging.getLogger("pgferry")

# SQLSTATEs worth retrying: the same statement may well succeed a moment later.
_TRANSIENT_SQLSTATES = frozenset(
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


class Interval(NamedTuple):
    """A PostgreSQL ``interval`` exactly as stored: months, days and microseconds.

    asyncpg's default codec turns intervals into ``timedelta``, which folds ``1 mon`` into 30
    days; pgferry keeps the three fields apart so that every interval round-trips. A transform
    may return an :class:`Interval` or a ``datetime.timedelta``.
    """

    months: int
    days: int
    microseconds: int

    def to_timedelta(self) -> dt.timedelta:
        """The interval as a ``timedelta``, counting a month as 30 days (lossy)."""
        return dt.timedelta(days=self.months * 30 + self.days, microseconds=self.microseconds)


def _encode_interval(value: Any) -> tuple[int, int, int]:
    if isinstance(value, dt.timedelta):
        return (0, value.days, value.seconds * 1_000_000 + value.microseconds)
    months, days, micros = value
    return (int(months), int(days), int(micros))


def _decode_interval(value: tuple[int, int, int]) -> Interval:
    return Interval(*value)


def _encode_json(value: Any) -> bytes:
    # A str is taken as JSON text already (what the source connection hands out); anything
    # else a transform produced (dict, list, number, bool) is serialised.
    text = value if isinstance(value, str) else json.dumps(value)
    return text.encode()


def _decode_json(value: bytes) -> str:
    return value.decode()


def _encode_jsonb(value: Any) -> bytes:
    # Binary jsonb is a version byte (1) followed by the JSON text; binary is required because
    # COPY through copy_records_to_table only uses binary encoders.
    return b"\x01" + _encode_json(value)


def _decode_jsonb(value: bytes) -> str:
    return value[1:].decode()


def is_transient_pg_error(exc: BaseException) -> bool:
    """True if ``exc`` is a failure that a retry of the same work may not meet again."""
    if isinstance(exc, Transient):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state.startswith("08") or state in _TRANSIENT_SQLSTATES
    return isinstance(
        exc,
        asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.InterfaceError
        | ConnectionError
        | TimeoutError
        | OSError,
    )


async def connect(
    dsn: str | None,
    *,
    role: str,
    job: str,
    timeout: float,
    statement_timeout: float | None = None,
    codecs: bool = False,
) -> asyncpg.Connection:
    """Open a connection, failing within ``timeout`` seconds with a message naming the server.

    Args:
        dsn: Connection string.
        role: ``source`` or ``target``, for messages.
        job: The job name, for messages.
        timeout: Seconds for the whole connection attempt.
        statement_timeout: Per-statement limit in seconds, or ``None`` for the server default.
        codecs: Install the exact interval codec and the lenient json encoder (row path).

    Raises:
        ConfigError: The DSN is missing or malformed.
        TransientConnectError: The server is unreachable, timed out or not accepting yet.
        ConnectError: The server refused the login or the database does not exist.
    """
    if not dsn:
        raise ConfigError(f"no {role} DSN given", job=job)
    shown = mask_dsn(dsn)
    settings = {"application_name": f"pgferry:{job}"[:63]}
    if statement_timeout is not None:
        settings["statement_timeout"] = str(int(statement_timeout * 1000))
    try:
        conn = await asyncio.wait_for(
            asyncpg.connect(dsn, timeout=timeout, server_settings=settings), timeout + 1
        )
    except (asyncpg.ClientConfigurationError, ValueError) as exc:
        raise ConfigError(f"invalid {role} DSN {shown}: {exc}", job=job) from exc
    except TimeoutError as exc:
        raise TransientConnectError(
            f"cannot connect to {role} {shown}: no answer within {timeout:g} s", job=job
        ) from exc
    except OSError as exc:
        raise TransientConnectError(
            f"cannot connect to {role} {shown}: {exc.strerror or exc}", job=job
        ) from exc
    except asyncpg.PostgresError as exc:
        cls = TransientConnectError if is_transient_pg_error(exc) else ConnectError
        raise cls(f"{role} {shown} refused the connection: {exc}", job=job) from exc
    except PgferryError:
        raise
    except Exception as exc:
        raise ConnectError(f"cannot connect to {role} {shown}: {exc}", job=job) from exc
    if codecs:
        await install_codecs(conn)
    return conn


async def install_codecs(conn: asyncpg.Connection) -> None:
    """Exact interval codec; json/jsonb as text in, text or any JSON-able value out."""
    await conn.set_type_codec(
        "interval",
        schema="pg_catalog",
        encoder=_encode_interval,
        decoder=_decode_interval,
        format="tuple",
    )
    await conn.set_type_codec(
        "json", schema="pg_catalog", encoder=_encode_json, decoder=_decode_json, format="binary"
    )
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )


async def close_quietly(conn: asyncpg.Connection | None, timeout: float = 5.0) -> None:
    """Close a connection without raising; terminate it if a graceful close hangs.

    Shielded so that a cancelled run still closes every connection before it unwinds.
    """
    if conn is None or conn.is_closed():
        return

    async def _close() -> None:
        try:
            await asyncio.wait_for(conn.close(), timeout)
        except Exception:
            conn.terminate()

    try:
        await asyncio.shield(_close())
    except asyncio.CancelledError:
        conn.terminate()
        raise
