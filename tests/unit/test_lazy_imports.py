"""Start-up: what importing pgferry and its CLI loads before it is needed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ["yaml", "rich", "pyarrow", "polars", "adbc_driver_manager", "multiprocessing"]


@pytest.mark.parametrize("module", ["pgferry", "pgferry.cli"])
def test_import_does_not_load_what_a_run_may_not_need(module: str) -> None:
    code = (
        f"import json, sys; import {module}; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
