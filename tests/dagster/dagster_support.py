"""Helpers for the Dagster tests: reading what a ``materialize`` run reported."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import dagster as dg

ROOT = Path(__file__).resolve().parents[2]
# `dagster_defs` sits at the repository root, beside `src/`.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def materialization(result: dg.ExecuteInProcessResult, key: str | None = None) -> dict[str, Any]:
    """The metadata values of the (only, or ``key``'s) materialisation of a run."""
    events = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if key is None or e.materialization.asset_key.to_user_string() == key
    ]
    assert len(events) == 1, events
    return {k: v.value for k, v in events[0].metadata.items()}


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """Asset check evaluations of a run, by check name."""
    return {e.check_name: e for e in result.get_asset_check_evaluations()}
