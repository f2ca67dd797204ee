"""Split a source into key ranges that run as independent partitions.

Each range becomes a :class:`~pgferry.spec.Partition` with its own ledger entry, so that an
orchestrator can run them in parallel (Airflow mapped tasks, Dagster partitions) and retry each
one on its own.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from pgferry import keys, schema, sql
from pgferry.connection import close_quietly, connect
from pgferry.engine.plan import describe_source
from pgferry.errors import ConfigError
from pgferry.keys import KeyChoice
from pgferry.spec import Job, Partition

__all__ = ["plan_partitions", "plan_partitions_async", "plan_partitions_with_key"]

# Above this many estimated rows, quantiles come from a sample rather than the whole table.
_SAMPLE_ABOVE = 1_000_000


def _name(column: str, lower: Any, upper: Any) -> str:
    low = "" if lower is None else str(lower)
    high = "" if upper is None else str(upper)
    return f"{column}[{low}..{high})"


def _ranges(column: str, bounds: list[Any]) -> list[Partition]:
    # The outer ranges are open, so rows added below the minimum or above the maximum after
    # planning still belong to a partition.
    edges: list[Any] = [None, *bounds, None]
    return [
        Partition(name=_name(column, lo, hi), column=column, lower=lo, upper=hi)
        for lo, hi in itertools.pairwise(edges)
    ]


async def plan_partitions_async(job: Job, n: int) -> list[Partition]:
    """Split the job's source into ``n`` ranges of its (single-column) key.

    The key is the job's, else the source table's primary key (or smallest unique NOT NULL
    index, :mod:`pgferry.keys`). Integer keys are split evenly between their minimum and
    maximum; other keys at quantiles (from a sample for large tables). Fewer than ``n``
    ranges come back when there are fewer distinct keys.

    Raises:
        ConfigError: ``n`` is not positive, or the job has no single-column key.
    """
    parts, _ = await plan_partitions_with_key(job, n)
    return parts


async def plan_partitions_with_key(job: Job, n: int) -> tuple[list[Partition], KeyChoice]:
    """:func:`plan_partitions_async`, and which key was chosen and why."""
    if n < 1:
        raise ConfigError(f"cannot plan {n} partitions: give a positive number", job=job.name)
    conn = await connect(job.source.dsn, role="source", job=job.name, timeout=job.connect_timeout)
    try:
        job, choice = await keys.resolve(conn, job)
        key = job.read_key or []
        if len(key) != 1:
            why = f"the key is ({', '.join(key)})" if key else choice.why
            raise ConfigError(
                f"partitions need a single-column key: set source.key ({why})", job=job.name
            )
        column = key[0]
        base, columns, estimate = await describe_source(conn, job)
        types = {c.name: c.type for c in columns}
        if column not in types:
            raise ConfigError(f"the source has no key column {column!r}", job=job.name)
        if n == 1:
            return _ranges(column, []), choice
        if types[column] in schema.INTEGER_TYPES:
            span = await conn.fetchrow(sql.min_max(base, column))
            assert span is not None  # an aggregate: one row, always
            low, high = span
            if low is None:
                return _ranges(column, []), choice
            step = (high - low + 1) / n
            bounds = sorted({int(low + step * i) for i in range(1, n)} - {low})
        else:
            fractions = [i / n for i in range(1, n)]
            big = estimate is not None and estimate > _SAMPLE_ABOVE
            query = sql.quantiles(base, column, sample=job.source.table if big else None)
            values = await conn.fetchval(query, fractions)
            bounds = sorted({v for v in values or [] if v is not None})
            # Text bounds are bound back as text and converted by the server.
            bounds = [b if isinstance(b, int | float) else str(b) for b in bounds]
        return _ranges(column, bounds), choice
    finally:
        await close_quietly(conn)


def plan_partitions(job: Job, n: int) -> list[Partition]:
    """Blocking form of :func:`plan_partitions_async`."""
    return asyncio.run(plan_partitions_async(job, n))
