"""The rows lane: extract → transform → load over bounded queues, commits in extraction order.

::

    cursor.fetch(batch_size) ──Batch──► TransformStage ──Transformed──► LoadStage ──► sink
      REPEATABLE READ READ ONLY          inline, or a      (FIFO: extraction   one txn
      one snapshot                       process pool       order)             per batch

Without a transform (the pipe's fallback, to isolate a bad row), rows pass through as decoded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from pgferry import schema
from pgferry.engine import bounds, functions, values
from pgferry.engine.extract import extract_batches
from pgferry.engine.lanes.base import LaneContext
from pgferry.engine.load import LoadStage, discard_pending
from pgferry.engine.plan import SourcePlan
from pgferry.engine.stages import run_stages
from pgferry.engine.transform import TransformStage, outbox_depth
from pgferry.errors import SchemaError
from pgferry.spec import Job

__all__ = ["run_rows"]

# Types asyncpg can decode but not write in binary, which copy_records_to_table requires
# (int2vector and oidvector it writes as arrays numbered from 1, which the server refuses),
# with the cast that carries each exactly.
_NO_BINARY_ENCODER = {
    "money": "::numeric",
    "tsvector": "::text",
    "tsquery": "::text",
    "xml": "::text",
    "int2vector": "::int2[]",
    "oidvector": "::oid[]",
}


async def run_rows(ctx: LaneContext) -> None:
    """Move the rows of ``ctx.plan`` through the transform into ``ctx.sink``."""
    job, plan, result = ctx.job, ctx.plan, ctx.result
    await check_row_path_types(ctx.src, job, plan)
    query, arrays = await bounds.checked_query(ctx.src, plan)
    await values.prepare_source(ctx.src)
    fn = functions.load_transform(job.transform) if job.transform is not None else None
    raw: asyncio.Queue[Any] = asyncio.Queue(maxsize=job.queue_depth)
    done: asyncio.Queue[Any] = asyncio.Queue(maxsize=outbox_depth(job))
    transform = TransformStage(job, fn, raw, done, result, plan.position_index)
    load = LoadStage(job, ctx.sink, plan, done, result, ctx.on_progress, prepared=ctx.prepared)
    extract = extract_batches(
        ctx.src,
        query,
        plan.args,
        tuple(c.name for c in plan.columns),
        batch_size=job.batch_size,
        queue=raw,
        stats=result.stages["extract"],
        job=job.name,
        snapshot=ctx.snapshot,
        on_snapshot=ctx.on_snapshot,
        arrays=arrays,
    )
    try:
        await run_stages(extract, transform.run(), load.run())
    finally:
        discard_pending(done)
        await transform.close()


async def check_row_path_types(conn: asyncpg.Connection, job: Job, plan: SourcePlan) -> None:
    """Refuse up front the columns that decoded rows cannot carry back to PostgreSQL (by their
    type, or the type under their domains)."""
    bases = await schema.base_types(conn, [c.type for c in plan.columns])
    for col, base_type in zip(plan.columns, bases, strict=True):
        base = base_type.removesuffix("[]")
        if base in _NO_BINARY_ENCODER:
            raise SchemaError(
                f"column {col.name!r} has type {col.type}, which decoded rows cannot carry "
                f"back to PostgreSQL; cast it in a source query "
                f"({col.name}{_NO_BINARY_ENCODER[base]}) or run without a transform to use "
                "the binary pipe",
                job=job.name,
                column=col.name,
            )
