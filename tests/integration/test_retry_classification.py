"""The one classification (pgferry.retry.is_transient) against real failures, not constructed
exceptions: a refused connection, a server restart, a bad certificate path, a DNS failure and a
failed login, each met by pgferry's own ``connect`` and by a live connection."""

from __future__ import annotations

import asyncio
import socket
import urllib.parse

import asyncpg
import pytest

from pgferry.connection import connect
from pgferry.embedded import EmbeddedPostgres
from pgferry.errors import ConnectError, PgferryError, Transient
from pgferry.retry import is_transient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _connect_error(dsn: str) -> PgferryError:
    with pytest.raises(PgferryError) as info:
        await connect(dsn, role="target", job="classify", timeout=5)
    return info.value


async def test_refused_connection_is_transient() -> None:
    err = await _connect_error(f"postgresql://postgres@127.0.0.1:{_free_port()}/postgres")
    assert isinstance(err, Transient), err
    assert is_transient(err.__cause__)  # type: ignore[arg-type]


async def test_failed_login_is_not_transient(pg_server_dsn: str) -> None:
    parts = urllib.parse.urlsplit(pg_server_dsn)
    host = parts.hostname or "127.0.0.1"
    dsn = f"postgresql://no_such_role_pgferry:wrong@{host}:{parts.port or 5432}/postgres"
    err = await _connect_error(dsn)
    assert isinstance(err, ConnectError) and not isinstance(err, Transient), err
    assert isinstance(err.__cause__, asyncpg.PostgresError)
    assert err.__cause__.sqlstate.startswith("28")  # invalid authorization
    assert not is_transient(err.__cause__)


async def test_bad_certificate_path_is_not_transient(pg_server_dsn: str) -> None:
    sep = "&" if "?" in pg_server_dsn else "?"
    dsn = f"{pg_server_dsn}{sep}sslmode=verify-full&sslrootcert=/nonexistent/pgferry/root.crt"
    err = await _connect_error(dsn)
    assert not isinstance(err, Transient), err


async def test_dns_failure_is_classified_by_its_kind() -> None:
    host = "pgferry-no-such-host.invalid"
    try:
        socket.getaddrinfo(host, 5432)
    except socket.gaierror as exc:
        kind = exc
    else:  # pragma: no cover - a resolver that answers for .invalid
        pytest.fail("the resolver answered for a .invalid name")
    err = await _connect_error(f"postgresql://postgres@{host}:5432/postgres")
    # "Name or service not known" will not pass by itself; "temporary failure" may.
    expected = kind.errno == socket.EAI_AGAIN
    assert isinstance(err, Transient) is expected, (kind, err)
    assert is_transient(kind) is expected


@pytest.mark.slow
async def test_server_restart_is_transient_for_live_and_new_connections() -> None:
    server = EmbeddedPostgres(fast=True)
    await asyncio.to_thread(server.start)
    try:
        dsn = server.dsn
        conn = await asyncpg.connect(dsn)
        assert await conn.fetchval("SELECT 1") == 1
        await asyncio.to_thread(server.stop)
        with pytest.raises(Exception) as live:
            await conn.fetchval("SELECT 1")
        assert is_transient(live.value), repr(live.value)
        down = await _connect_error(dsn)
        assert isinstance(down, Transient), down
        await asyncio.to_thread(server.start)
        back = await connect(server.dsn, role="target", job="classify", timeout=10)
        assert await back.fetchval("SELECT 2") == 2
        await back.close()
    finally:
        await asyncio.to_thread(server.stop)
