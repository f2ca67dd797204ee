"""Invariant 1: memory is bounded by the knobs, not by the table.

Each run happens in a fresh subprocess, which reports its own peak RSS; 4x the rows must stay
within a small margin of 1x the rows.
"""

from __future__ import annotations

import pytest

from helpers import Databases, assert_peak_rss_flat

CHILD = r"""
import json, resource, sys
import pgferry
dsn_src, dsn_tgt, table, transform = sys.argv[1:5]
job = pgferry.Job.from_dict({
    "source": {"dsn": dsn_src, "table": table},
    "target": {"dsn": dsn_tgt, "table": "copy_" + table, "mode": "replace"},
    "transform": transform or None, "batch_size": 2000, "queue_depth": 4, "workers": 0,
})
result = pgferry.run(job)
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": result.rows_written, "peak_mib": peak_kib / 1024}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("transform", ["", "pgferry.demo:split_name"])
def test_peak_rss_does_not_grow_with_the_table(dbs: Databases, transform: str) -> None:
    assert_peak_rss_flat(dbs, CHILD, transform)
