"""Example Dagster definitions for pgferry: ``dagster dev -m dagster_defs``.

Every asset here is materialised by ``tests/dagster``. See ``docs/dagster.md``.
"""

from dagster_defs.definitions import defs

__all__ = ["defs"]
