"""Key ranges of a parallel run: the plan recorded in the ledger, its locks, who may use it.

A parallel run (:mod:`pgferry.engine.parallel`) records its ranges in the job's ledger row
before any pipeline starts (``progress = [MARKER, plan id, key column, bounds…]``); each range
commits its batches with a ledger row of its own (``<partition>#pipelines-<plan id>-<i>``). A
run that stops part-way leaves both, and any later run of the job finds them and continues
every range after its own last batch; a finished run removes them in one transaction
(:func:`forget_ranges`).

While a pipeline runs it holds :func:`pipelines_lock` in shared mode, and every run waits for
that lock (:func:`pgferry.locks.wait_for_no_pipelines`) before it reads the ledger: a pipeline
that outlived its coordinator can never write next to a new run.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from pgferry import locks, schema
from pgferry.engine import functions as tf
from pgferry.engine.plan import PIPELINES_MARKER, SourcePlan
from pgferry.result import RunResult
from pgferry.spec import Job, Partition
from pgferry.state import LedgerEntry, StateStore

__all__ = [
    "MARKER",
    "Ranges",
    "forget_ranges",
    "parse_marker",
    "pipelines_lock",
    "transform_path",
    "why_not_parallel",
]

log = logging.getLogger("pgferry")

MARKER = PIPELINES_MARKER


@dataclass
class Ranges:
    """The key ranges of a parallel run, as recorded in the job's ledger row.

    Attributes:
        plan_id: Names the ranges' ledger rows, so that rows of another plan never match.
        column: The key column.
        bounds: Inner bounds: ranges ``(-∞, b1)``, ``[b1, b2)`` … ``[bn-1, ∞)``; the first also
            holds rows whose key is NULL.
        resumed: Read from the ledger (a run that stopped part-way) rather than planned now.
    """

    plan_id: str
    column: str
    bounds: list[int]
    resumed: bool = False

    @property
    def count(self) -> int:
        """Number of ranges."""
        return len(self.bounds) + 1

    def marker(self) -> list[str]:
        """The ledger ``progress`` value that records the plan."""
        return [MARKER, self.plan_id, self.column, *map(str, self.bounds)]

    def partitions(self, partition: str) -> list[Partition]:
        """One :class:`Partition` per range, named after the job's own ledger row."""
        edges: list[int | None] = [None, *self.bounds, None]
        return [
            Partition(
                name=f"{partition}#pipelines-{self.plan_id}-{i}",
                column=self.column,
                lower=edges[i],
                upper=edges[i + 1],
            )
            for i in range(self.count)
        ]


def parse_marker(progress: Sequence[str] | None) -> Ranges | None:
    """The ranges recorded in a ledger ``progress`` value, if it is a parallel plan."""
    if not progress or progress[0] != MARKER or len(progress) < 3:
        return None
    return Ranges(progress[1], progress[2], [int(b) for b in progress[3:]], resumed=True)


def pipelines_lock(job: Job) -> str:
    """The advisory lock a job's pipelines hold in shared mode while they run."""
    return locks.pipelines_lock_name(job.name, job.partition.name if job.partition else "")


def why_not_parallel(job: Job, plan: SourcePlan) -> str | None:
    """Why this job runs in one pipeline, or ``None`` if it may run in several."""
    if job.transform is None:
        return "no transform"
    if job.pipelines == 1:
        return "pipelines: 1"
    if job.pipelines == "auto" and isinstance(job.workers, int):
        return f"workers: {job.workers} chooses a single pipeline"
    if job.incremental is not None:
        return "an incremental load commits one watermark in key order"
    if job.partition is not None:
        return "the job is a partition already"
    if job.target.sync_deletes:
        return "sync_deletes compares the whole source after the load"
    if job.max_rejects > 0:
        return "max_rejects is one budget for the whole run"
    if plan.txn_scope == "run":
        return "without a key the run is one transaction"
    if plan.start is not None:
        return "an earlier run stopped part-way: it continues in one pipeline"
    key = job.read_key or []
    if len(key) != 1:
        return "key ranges need a single-column key (source.key or target.key)"
    types = {c.name: c.type for c in plan.columns}
    if types.get(key[0]) not in schema.INTEGER_TYPES:
        return f"the key {key[0]!r} is not an integer column"
    if job.target.mode == "upsert" and job.upsert_key != key:
        return "the upsert key differs from the key the ranges split"
    if transform_path(job) is None:
        return "the transform is not importable by module path"
    if not sys.executable:
        return "no Python executable to start worker processes with"
    return None


def transform_path(job: Job) -> str | None:
    """The import path a worker process loads the job's transform by, if it has one."""
    if isinstance(job.transform, str):
        return job.transform
    return tf.import_path_of(job.transform) if job.transform is not None else None


async def forget_ranges(
    conn: asyncpg.Connection,
    store: StateStore,
    job: Job,
    partition: str,
    result: RunResult,
    ranges: Ranges,
    *,
    done: bool = False,
) -> None:
    """In one transaction: fold the ranges' ledger rows into the job's, delete them, and clear
    the plan (``done``: every range finished; the run's rows are all committed). Also for the
    plan of a failed ``upsert``/``replace`` run, which starts over."""
    names = [p.name for p in ranges.partitions(partition)]
    async with conn.transaction():
        folded = 0
        for name in names:
            entry: LedgerEntry | None = await store.read(conn, job.name, name)
            folded += entry.rows_written if entry is not None else 0
            await store.reset(conn, job.name, name)
        await store.save_batch(
            conn,
            job.name,
            partition,
            watermark=None,
            progress=None,
            run_id=result.run_id,
            rows=folded,
        )
        await store.clear_progress(conn, job.name, partition)
        if done:
            # The last rows of the run are in: this is its final commit.
            await store.mark_committed(conn, result.run_id)
