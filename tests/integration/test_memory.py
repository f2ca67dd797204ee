"""Invariant 1: memory is bounded by the knobs, not by the table.

Each run happens in a fresh subprocess, which reports its own peak RSS; 4x the rows must stay
within a small margin of 1x the rows.
"""

from __future__ import annotations

import pytest

from helpers import Databases, child_peak_rss, execute
from pgferry.demo import workload_statements

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


def peak_rss(dbs: Databases, table: str, transform: str) -> tuple[int, float]:
    return child_peak_rss(CHILD, dbs.source, dbs.target, table, transform)


@pytest.mark.slow
@pytest.mark.parametrize("transform", ["", "pgferry.demo:split_name"])
def test_peak_rss_does_not_grow_with_the_table(dbs: Databases, transform: str) -> None:
    for rows, table in ((40_000, "small"), (160_000, "large")):
        for statement in workload_statements(rows):
            execute(dbs.source, statement)
        execute(dbs.source, f"ALTER TABLE bench_src RENAME TO {table}")
        execute(dbs.source, "DROP VIEW bench_expected")
    small_rows, small = peak_rss(dbs, "small", transform)
    large_rows, large = peak_rss(dbs, "large", transform)
    assert (small_rows, large_rows) == (40_000, 160_000)
    print(f"peak RSS {transform or 'pipe'}: {small:.1f} MiB for 1x, {large:.1f} MiB for 4x")
    assert large <= small * 1.10 + 4, f"peak RSS {small:.1f} MiB for 1x, {large:.1f} MiB for 4x"
