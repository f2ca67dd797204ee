"""Connections: timeouts, codecs that round-trip exactly, and error classification."""

from __future__ import annotations

import asyncio
import copyreg
import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import asyncpg
from asyncpg.pgproto import types as pgtypes

from pgferry._dsn import mask_dsn
from pgferry.errors import (
    ConfigError,
    ConnectError,
    PgferryError,
    TransientConnectError,
)
from pgferry.retry import is_transient

__all__ = [
    "DATE_INFINITY",
    "DATE_MINUS_INFINITY",
    "TIMESTAMPTZ_INFINITY",
    "TIMESTAMPTZ_MINUS_INFINITY",
    "TIMESTAMP_INFINITY",
    "TIMESTAMP_MINUS_INFINITY",
    "TIME_24_00",
    "EndOfDay",
    "InfiniteDate",
    "InfiniteDatetime",
    "Interval",
    "close_quietly",
    "connect",
    "install_codecs",
]

log = logging.getLogger("pgferry")

# SQLSTATEs worth retrying: the same statement may well succeed a moment later.


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


# --- Dates and times -------------------------------------------------------------------------
#
# asyncpg decodes ``infinity`` as ``date.max`` / ``datetime.max`` and encodes those values back
# as ``infinity``, so a real ``9999-12-31`` (a common "valid until" sentinel) or
# ``0001-01-01`` silently becomes ``±infinity`` on the row path. It also truncates a ``timetz``
# offset to whole minutes and cannot decode ``24:00:00``. pgferry's codecs keep them apart:
# ``±infinity`` and ``24:00:00`` decode as instances of marker subclasses that compare equal to
# the nearest Python value (``date.max``, ``time.max``, …) and encode back exactly; plain
# values encode as themselves.


class InfiniteDate(dt.date):
    """``infinity`` / ``-infinity`` of a ``date`` column: equal to ``date.max`` / ``date.min``."""

    __slots__ = ()


class InfiniteDatetime(dt.datetime):
    """``±infinity`` of a ``timestamp[tz]`` column: equal to ``datetime.max`` / ``.min``."""

    __slots__ = ()


class EndOfDay(dt.time):
    """``24:00:00`` of a ``time[tz]`` column: equal to ``23:59:59.999999``."""

    __slots__ = ()


DATE_INFINITY = InfiniteDate(dt.MAXYEAR, 12, 31)
DATE_MINUS_INFINITY = InfiniteDate(dt.MINYEAR, 1, 1)
TIMESTAMP_INFINITY = InfiniteDatetime(dt.MAXYEAR, 12, 31, 23, 59, 59, 999999)
TIMESTAMP_MINUS_INFINITY = InfiniteDatetime(dt.MINYEAR, 1, 1)
TIMESTAMPTZ_INFINITY = TIMESTAMP_INFINITY.replace(tzinfo=dt.UTC)
TIMESTAMPTZ_MINUS_INFINITY = TIMESTAMP_MINUS_INFINITY.replace(tzinfo=dt.UTC)
TIME_24_00 = EndOfDay(23, 59, 59, 999999)

_PG_DATE_INF = 0x7FFFFFFF
_PG_DATE_MINUS_INF = -0x80000000
_PG_TS_INF = 0x7FFFFFFFFFFFFFFF
_PG_TS_MINUS_INF = -0x8000000000000000
_PG_EPOCH_ORDINAL = dt.date(2000, 1, 1).toordinal()
_PG_EPOCH = dt.datetime(2000, 1, 1)
_PG_EPOCH_UTC = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_DAY_US = 86_400_000_000
_US = dt.timedelta(microseconds=1)
_datetime = dt.datetime
_date = dt.date


def _out_of_range(type_name: str, detail: str) -> ValueError:
    return ValueError(
        f"a {type_name} value {detail} is outside what Python's datetime can hold (years "
        f"1-9999); move this column without a transform, or cast it to text in the source query"
    )


def _decode_date(value: tuple[int]) -> dt.date:
    days = value[0]
    if days == _PG_DATE_INF:
        return DATE_INFINITY
    if days == _PG_DATE_MINUS_INF:
        return DATE_MINUS_INFINITY
    try:
        return dt.date.fromordinal(days + _PG_EPOCH_ORDINAL)
    except (ValueError, OverflowError):
        raise _out_of_range("date", f"{days} days from 2000-01-01") from None


def _encode_date(value: Any) -> tuple[int]:
    if type(value) is _date:  # the common case first: these run once per value
        return (value.toordinal() - _PG_EPOCH_ORDINAL,)
    if isinstance(value, InfiniteDate | InfiniteDatetime):
        return (_PG_DATE_INF if value.year == dt.MAXYEAR else _PG_DATE_MINUS_INF,)
    return (value.toordinal() - _PG_EPOCH_ORDINAL,)


# ``_US * us`` builds the timedelta a third faster than ``timedelta(0, 0, us)`` (≈350 against
# ≈500 ns), exactly: integer microseconds. ``±infinity`` (the int64 extremes) lies outside
# ``datetime``'s range, so the addition overflows for them and the common case pays no test.


def _decode_timestamp(value: tuple[int]) -> dt.datetime:
    try:
        return _PG_EPOCH + _US * value[0]
    except OverflowError:
        pass
    us = value[0]
    if us == _PG_TS_INF:
        return TIMESTAMP_INFINITY
    if us == _PG_TS_MINUS_INF:
        return TIMESTAMP_MINUS_INFINITY
    raise _out_of_range("timestamp", f"{us} µs from 2000-01-01")


def _encode_timestamp(value: Any) -> tuple[int]:
    if type(value) is _datetime:
        delta = value - _PG_EPOCH  # its fields, as in _encode_timestamptz
        return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds,)
    if isinstance(value, InfiniteDatetime | InfiniteDate):
        return (_PG_TS_INF if value.year == dt.MAXYEAR else _PG_TS_MINUS_INF,)
    if not isinstance(value, dt.datetime):
        if not isinstance(value, dt.date):
            raise TypeError(f"expected a datetime.datetime or datetime.date, got {type(value)}")
        value = dt.datetime(value.year, value.month, value.day)
    return ((value - _PG_EPOCH) // _US,)


def _decode_timestamptz(value: tuple[int]) -> dt.datetime:
    try:
        return _PG_EPOCH_UTC + _US * value[0]
    except OverflowError:
        pass
    us = value[0]
    if us == _PG_TS_INF:
        return TIMESTAMPTZ_INFINITY
    if us == _PG_TS_MINUS_INF:
        return TIMESTAMPTZ_MINUS_INFINITY
    raise _out_of_range("timestamptz", f"{us} µs from 2000-01-01 UTC")


def _encode_timestamptz(value: Any) -> tuple[int]:
    if type(value) is not _datetime or value.tzinfo is None:
        if isinstance(value, InfiniteDatetime | InfiniteDate):
            return (_PG_TS_INF if value.year == dt.MAXYEAR else _PG_TS_MINUS_INF,)
        if not isinstance(value, dt.datetime):
            if not isinstance(value, dt.date):
                raise TypeError(f"expected a datetime.datetime or datetime.date, got {type(value)}")
            value = dt.datetime(value.year, value.month, value.day)
        if value.tzinfo is None:
            # A naive datetime (or a date) is taken as local time, as asyncpg does.
            value = value.astimezone(dt.UTC)
    # Subtracting aware datetimes accounts for their offsets. Summing the difference's fields is
    # exact and ≈10 % cheaper than ``difference // _US``.
    delta = value - _PG_EPOCH_UTC
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds,)


def _time_from_us(us: int, tz: dt.tzinfo | None) -> dt.time:
    if us == _DAY_US:
        return EndOfDay(23, 59, 59, 999999, tzinfo=tz)
    seconds, micro = divmod(us, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return dt.time(hour, minute, second, micro, tzinfo=tz)


def _us_of_time(value: dt.time) -> int:
    if isinstance(value, EndOfDay):
        return _DAY_US
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond


def _decode_time(value: tuple[int]) -> dt.time:
    return _time_from_us(value[0], None)


def _encode_time(value: dt.time) -> tuple[int]:
    return (_us_of_time(value),)


def _decode_timetz(value: tuple[int, int]) -> dt.time:
    us, zone = value
    # PostgreSQL stores the zone as seconds west of UTC, Python as the offset east of it.
    return _time_from_us(us, dt.timezone(dt.timedelta(seconds=-zone)))


def _encode_timetz(value: dt.time) -> tuple[int, int]:
    offset = value.utcoffset()
    if offset is None:
        raise TypeError("a time with time zone needs a datetime.time with tzinfo")
    return (_us_of_time(value), -(offset // dt.timedelta(seconds=1)))


# --- MAC addresses ---------------------------------------------------------------------------
# asyncpg has text codecs only for these, and COPY from Python rows needs binary encoders.


def _mac_bytes(value: Any, size: int) -> bytes:
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
    else:
        digits = "".join(ch for ch in str(value) if ch not in ":-. ")
        try:
            raw = bytes.fromhex(digits)
        except ValueError:
            raw = b""
    if size == 8 and len(raw) == 6:  # PostgreSQL's own conversion of a 6-byte address
        raw = raw[:3] + b"\xff\xfe" + raw[3:]
    if len(raw) != size:
        raise ValueError(f"invalid MAC address for a {size}-byte column: {value!r}")
    return raw


def _encode_macaddr(value: Any) -> bytes:
    return _mac_bytes(value, 6)


def _encode_macaddr8(value: Any) -> bytes:
    return _mac_bytes(value, 8)


def _decode_mac(value: bytes) -> str:
    return value.hex(":")


# --- Pickling decoded values for the process pool ---------------------------------------------
# asyncpg's geometric types are tuple subclasses whose __new__ takes the fields as separate
# arguments, so the default pickling (tuple contents as one argument) fails; composite values
# arrive as asyncpg.Record, which does not pickle at all. Register reducers once, at import,
# in the parent and (through ``import pgferry``) in every pool worker.


def _reduce_point(p: Any) -> tuple[Any, ...]:
    return pgtypes.Point, (p[0], p[1])


def _reduce_pair_of_points(v: Any) -> tuple[Any, ...]:
    return type(v), (tuple(v[0]), tuple(v[1]))


def _reduce_line(v: Any) -> tuple[Any, ...]:
    return pgtypes.Line, (v[0], v[1], v[2])


def _reduce_circle(v: Any) -> tuple[Any, ...]:
    return pgtypes.Circle, (v[0], v[1])


def _reduce_record(r: Any) -> tuple[Any, ...]:
    # A composite value is written from a tuple of its fields just as well.
    return tuple, (tuple(r),)


copyreg.pickle(pgtypes.Point, _reduce_point)
copyreg.pickle(pgtypes.Box, _reduce_pair_of_points)
copyreg.pickle(pgtypes.LineSegment, _reduce_pair_of_points)
copyreg.pickle(pgtypes.Line, _reduce_line)
copyreg.pickle(pgtypes.Circle, _reduce_circle)
copyreg.pickle(asyncpg.Record, _reduce_record)


# --- JSON ------------------------------------------------------------------------------------


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


async def connect(
    dsn: str | None,
    *,
    role: str,
    job: str,
    timeout: float,
    statement_timeout: float | None = None,
    codecs: bool = False,
    purpose: str | None = None,
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
    # The purpose (reader, loader, control…) tells a DBA which connection is which.
    label = f"pgferry:{job}" + (f":{purpose}" if purpose else "")
    settings = {"application_name": label[:63]}
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
        # A refused or reset connection may pass (a restarting server); a missing
        # certificate file or an unknown host name will not.
        cls = TransientConnectError if is_transient(exc) else ConnectError
        raise cls(f"cannot connect to {role} {shown}: {exc.strerror or exc}", job=job) from exc
    except asyncpg.PostgresError as exc:
        cls = TransientConnectError if is_transient(exc) else ConnectError
        raise cls(f"{role} {shown} refused the connection: {exc}", job=job) from exc
    except PgferryError:
        raise
    except Exception as exc:
        raise ConnectError(f"cannot connect to {role} {shown}: {exc}", job=job) from exc
    if codecs:
        await install_codecs(conn)
    return conn


async def install_codecs(conn: asyncpg.Connection, *, exact_json: bool = True) -> None:
    """Codecs under which every value round-trips exactly through Python (the row path).

    * ``interval`` as :class:`Interval` (months, days, microseconds kept apart);
    * ``date``, ``timestamp``, ``timestamptz``, ``time``, ``timetz`` as :mod:`datetime` values,
      with ``±infinity`` and ``24:00:00`` as marker subclasses (:data:`DATE_INFINITY`,
      :data:`TIME_24_00`, …) and ``timetz`` offsets to the second;
    * ``json``/``jsonb`` as text in, text or any JSON-able value out;
    * ``macaddr``/``macaddr8`` as text, with the binary encoders COPY needs.

    Args:
        conn: The connection.
        exact_json: Replace asyncpg's C ``json``/``jsonb`` codecs too. They decode the same
            text and encode text four times faster, but refuse a dict or a list: with
            ``False`` the caller serialises such values itself (:mod:`pgferry.engine.values`).
    """
    tuple_codecs: tuple[tuple[str, Callable[[Any], Any], Callable[[Any], Any]], ...] = (
        ("interval", _encode_interval, _decode_interval),
        ("date", _encode_date, _decode_date),
        ("timestamp", _encode_timestamp, _decode_timestamp),
        ("timestamptz", _encode_timestamptz, _decode_timestamptz),
        ("time", _encode_time, _decode_time),
        ("timetz", _encode_timetz, _decode_timetz),
    )
    for name, encoder, decoder in tuple_codecs:
        await conn.set_type_codec(
            name, schema="pg_catalog", encoder=encoder, decoder=decoder, format="tuple"
        )
    for mac, mac_encoder in (("macaddr", _encode_macaddr), ("macaddr8", _encode_macaddr8)):
        await conn.set_type_codec(
            mac, schema="pg_catalog", encoder=mac_encoder, decoder=_decode_mac, format="binary"
        )
    if exact_json:
        for name, json_encoder, json_decoder in (
            ("json", _encode_json, _decode_json),
            ("jsonb", _encode_jsonb, _decode_jsonb),
        ):
            await conn.set_type_codec(
                name,
                schema="pg_catalog",
                encoder=json_encoder,
                decoder=json_decoder,
                format="binary",
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
