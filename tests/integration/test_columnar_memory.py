"""Invariant 1 on the columnar lane: peak RSS does not grow with the table.

The Arrow reader fetches one batch (a few MiB) at a time and only when the queue has room;
4x the rows must stay within a small margin of 1x the rows, as on the other lanes. The job sets
batch_size (2,000 rows), so that the queues are full at both sizes; with the default batches
(`batch_bytes`, 1 MiB: about 7,500 rows) they fill from about 75,000 rows on, which the
benchmark's 1M and 4M runs measure.
"""

from __future__ import annotations

import pytest

from helpers import Databases, assert_peak_rss_flat

# VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec, so a child started from a large
# pytest process would report the parent's peak.
CHILD = r"""
import json, sys
import pgferry
dsn_src, dsn_tgt, table, transform = sys.argv[1:5]
job = pgferry.Job.from_dict({
    "source": {"dsn": dsn_src, "table": table},
    "target": {"dsn": dsn_tgt, "table": "copy_" + table, "mode": "replace"},
    "transform": transform, "batch_size": 2000, "queue_depth": 4,
})
result = pgferry.run(job)
assert result.path == "columnar", result.path
status = open("/proc/self/status").read()
hwm_kib = int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1])
print(json.dumps({"rows": result.rows_written, "peak_mib": hwm_kib / 1024}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "transform", ["pgferry.demo:split_name_arrow", "pgferry.demo:split_name_polars"]
)
def test_peak_rss_does_not_grow_with_the_table(dbs: Databases, transform: str) -> None:
    assert_peak_rss_flat(dbs, CHILD, transform)
