"""The load stage: :class:`~pgferry.engine.items.Transformed` items in extraction order → a sink.

It awaits each batch's transform result in the order the batches were read, prepares the sink
from the first batch's columns (creating or checking the target), keeps every later batch in
the same column order, and hands the rows to :meth:`Sink.write`, which commits them with their
ledger row. Only the queue and the batch in hand hold rows, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import BrokenExecutor
from typing import Any

from pgferry import schema
from pgferry.engine.items import Transformed, TransformOutput
from pgferry.engine.plan import SourcePlan
from pgferry.engine.progress import Progress, ProgressCallback
from pgferry.engine.sinks.base import Reject, Sink
from pgferry.engine.stages import END
from pgferry.errors import PgferryError, TransformError
from pgferry.result import RunResult
from pgferry.spec import Job

__all__ = ["LoadStage", "discard_pending"]


class LoadStage:
    """Commits transformed batches to ``sink`` in extraction order.

    Args:
        job: The job.
        sink: Where the rows go.
        plan: The source plan (its columns type the target's pass-through columns).
        inbox: :class:`Transformed` items, then :data:`~pgferry.engine.stages.END`.
        result: The run's result.
        on_progress: Called after every committed batch.
        prepared: The columns a parallel run's coordinator prepared the sink with.
    """

    def __init__(
        self,
        job: Job,
        sink: Sink,
        plan: SourcePlan,
        inbox: asyncio.Queue[Any],
        result: RunResult,
        on_progress: ProgressCallback | None,
        *,
        prepared: Sequence[str] | None = None,
    ) -> None:
        self.job, self.sink, self.plan = job, sink, plan
        self.inbox = inbox
        self.result = result
        self.stats = result.stages["load"]
        self.transform_stats = result.stages["transform"]
        self.on_progress = on_progress
        self.prepared = prepared
        self.canonical: tuple[str, ...] | None = None

    async def run(self) -> None:
        """Load every batch until ``END``."""
        while True:
            with self.stats.waiting():
                item = await self.inbox.get()
                if item is END:
                    break
                output = await self._output(item)
            self.transform_stats.busy_s += output.cpu_s
            rejects: list[Reject] = [
                ("transform", cls, message, None, row) for cls, message, row in output.rejects
            ]
            await self._load(item, output, rejects)
            # The batch is committed: let it go before waiting for the next one.
            del item, output, rejects
            if self.on_progress is not None:
                r = self.result
                self.on_progress(
                    Progress(r.rows_read, r.rows_written, 0, self.plan.estimate, "rows")
                )

    async def _output(self, item: Transformed) -> TransformOutput:
        if item.deferred is not None:
            item.deferred()
        try:
            return await item.output
        except BrokenExecutor as exc:  # BrokenProcessPool
            raise TransformError(
                "a transform worker process died (killed, or out of memory)",
                job=self.job.name,
                batch=item.seq,
            ) from exc
        except PgferryError as exc:
            raise exc.with_context(job=self.job.name, batch=item.seq) from exc.__cause__

    async def _load(
        self, item: Transformed, output: TransformOutput, rejects: list[Reject]
    ) -> None:
        sink = self.sink
        rows = output.rows
        if output.columns is not None and not sink.ready:
            await self._prepare(output)
        if output.columns is not None and output.columns != self.canonical:
            assert self.canonical is not None
            # schema_changes: discard leaves new columns out of the sink's: drop them here.
            discard = self.job.target.schema_changes == "discard"
            rows = _reorder(
                output.columns, rows, self.canonical, self.job.name, item.seq, discard=discard
            )
        if not sink.ready:
            # Every row so far was dropped or rejected: nothing to write, but counted.
            self.result.rows_read += item.rows_read
            self.result.rows_rejected += len(rejects)
            return
        with self.stats.busy():
            await sink.write(
                item.seq,
                rows,
                rows_read=item.rows_read,
                position=item.position,
                rejects=rejects,
            )

    async def _prepare(self, output: TransformOutput) -> None:
        assert output.columns is not None
        sink, plan = self.sink, self.plan
        if self.prepared is not None:
            await sink.attach(self.prepared)
        else:
            incoming = schema.output_columns(
                output.columns, output.rows, plan.columns, self.job.target.columns
            )
            typed = {c.name for c in plan.columns} | set(self.job.target.columns)
            await sink.prepare(incoming, typed & set(output.columns))
        await sink.prepare_rows()
        self.canonical = sink.columns


def _reorder(
    cols: tuple[str, ...],
    rows: Sequence[Sequence[Any]],
    canonical: tuple[str, ...],
    job: str,
    seq: int,
    *,
    discard: bool = False,
) -> list[tuple[Any, ...]]:
    if set(cols) != set(canonical) and not (discard and set(canonical) <= set(cols)):
        extra = sorted(set(cols) - set(canonical))
        missing = sorted(set(canonical) - set(cols))
        raise TransformError(
            f"transform output changed columns between batches: extra {extra}, missing {missing}",
            job=job,
            batch=seq,
            column=(extra or missing)[0],
        )
    index = [cols.index(c) for c in canonical]
    return [tuple(row[i] for i in index) for row in rows]


def discard_pending(queue: asyncio.Queue[Any]) -> None:
    """Drop results a failed run will never load, marking their errors as seen."""
    while not queue.empty():
        item = queue.get_nowait()
        if item is END:
            continue
        output = item.output
        if output.done():
            if not output.cancelled():
                output.exception()
        else:
            output.cancel()
