"""Invariant 1 on the columnar lane: peak RSS does not grow with the table.

The Arrow reader fetches one batch (a few MiB) at a time and only when the queue has room;
4x the rows must stay within a small margin of 1x the rows, as on the other lanes. The job sets
batch_size (2,000 rows), so that the queues are full at both sizes; with the default batches
(what the driver reads at once, about 4 MiB) they fill from about 300,000 rows on, which the
benchmark's 1M and 4M runs measure.
"""

from __future__ import annotations

import pytest

from helpers import Databases, child_peak_rss, execute
from pgferry.demo import workload_statements

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


def peak_rss(dbs: Databases, table: str, transform: str) -> tuple[int, float]:
    return child_peak_rss(CHILD, dbs.source, dbs.target, table, transform)


@pytest.mark.slow
@pytest.mark.parametrize(
    "transform", ["pgferry.demo:split_name_arrow", "pgferry.demo:split_name_polars"]
)
def test_peak_rss_does_not_grow_with_the_table(dbs: Databases, transform: str) -> None:
    for rows, table in ((40_000, "small"), (160_000, "large")):
        for statement in workload_statements(rows):
            execute(dbs.source, statement)
        execute(dbs.source, f"ALTER TABLE bench_src RENAME TO {table}")
        execute(dbs.source, "DROP VIEW bench_expected")
    small_rows, small = peak_rss(dbs, "small", transform)
    large_rows, large = peak_rss(dbs, "large", transform)
    assert (small_rows, large_rows) == (40_000, 160_000)
    print(f"peak RSS {transform}: {small:.1f} MiB for 1x, {large:.1f} MiB for 4x")
    assert large <= small * 1.10 + 4, f"peak RSS {small:.1f} MiB for 1x, {large:.1f} MiB for 4x"
