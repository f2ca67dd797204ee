"""Fixtures for the Dagster tests: the example data and its DSNs in the environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dagster_support import ROOT

from helpers import Databases, execute

SEED = (ROOT / "dagster_defs" / "seed.sql").read_text()


@pytest.fixture
def example_dbs(dbs: Databases, monkeypatch: pytest.MonkeyPatch) -> Iterator[Databases]:
    """Fresh databases: the source seeded with ``dagster_defs/seed.sql``, and both DSNs in
    ``PGFERRY_SOURCE_DSN`` / ``PGFERRY_TARGET_DSN`` as the example definitions expect."""
    execute(dbs.source, SEED)
    monkeypatch.setenv("PGFERRY_SOURCE_DSN", dbs.source)
    monkeypatch.setenv("PGFERRY_TARGET_DSN", dbs.target)
    yield dbs
