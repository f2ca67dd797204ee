"""Asset checks for pgferry assets: row-count reconciliation and "no rejected rows"."""

# No `from __future__ import annotations`: Dagster reads the asset functions' annotations
# (the context type, the resource parameter) at definition time.
import asyncio
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from pgferry.dagster import _tables
from pgferry.dagster._asset_info import PgferryAssetInfo, pgferry_asset_info
from pgferry.dagster.resource import PgferryResource
from pgferry.errors import PgferryError

__all__ = ["pgferry_checks"]

ROW_COUNT_CHECK = "pgferry_row_count"
NO_REJECTS_CHECK = "pgferry_no_rejects"


def pgferry_checks(
    asset: dg.AssetsDefinition,
    *,
    row_count: bool = True,
    no_rejects: bool = True,
    blocking: bool = False,
) -> list[dg.AssetChecksDefinition]:
    """Asset checks for an asset built by :func:`~pgferry.dagster.pgferry_asset`.

    Both checks are partitioned like the asset, so each checks one window or key range.

    * ``pgferry_row_count`` (severity ERROR) counts the source rows in the asset's scope (the
      partition's window or key range, else the whole source from ``incremental.initial``)
      and the target rows in the same scope, and passes when they are equal. Attach it only
      where the transform keeps one row per source row and the source key is unique.
    * ``pgferry_no_rejects`` (severity WARN) looks at the latest materialisation of the asset
      (partition) and passes when its run set no row aside in ``pgferry.rejects``; otherwise
      it reports how many rows were rejected by stage, error class and column (never row
      data).

    Args:
        asset: The pgferry asset.
        row_count: Include the row-count reconciliation.
        no_rejects: Include the rejected-rows check.
        blocking: Make failing checks block downstream assets (in the same run).

    Returns:
        The checks, for ``Definitions(asset_checks=...)``; they use the ``pgferry`` resource.
    """
    info = pgferry_asset_info(asset)
    checks: list[dg.AssetChecksDefinition] = []
    with _partitioned_checks():
        if row_count:
            checks.append(_row_count_check(info, blocking))
        if no_rejects:
            checks.append(_no_rejects_check(info, blocking))
    return checks


@contextmanager
def _partitioned_checks() -> Iterator[None]:
    # Partitioned asset checks are a preview feature in Dagster 1.13, used here on purpose: a
    # check of one window or key range is what a partitioned load needs. Say so once, in the
    # docs, rather than at every load of the definitions.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        yield


def _partition_key(context: dg.AssetCheckExecutionContext) -> str | None:
    return context.partition_key if context.has_partition_key else None


def _row_count_check(info: PgferryAssetInfo, blocking: bool) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=info.key,
        name=ROW_COUNT_CHECK,
        description="Source rows in scope equal target rows in scope (pgferry).",
        blocking=blocking,
        partitions_def=info.partitions_def,
    )
    def _check(
        context: dg.AssetCheckExecutionContext, pgferry: PgferryResource
    ) -> dg.AssetCheckResult:
        job = pgferry.resolve(info.job_for(_partition_key(context)))

        async def counts() -> tuple[int, int | None]:
            return await asyncio.gather(_tables.count_source(job), _tables.count_target(job))

        try:
            source, target = asyncio.run(counts())
        except PgferryError as exc:
            return dg.AssetCheckResult(passed=False, description=f"could not count the rows: {exc}")
        meta: dict[str, Any] = {
            "pgferry/source_rows": source,
            "pgferry/target_rows": target,
        }
        if target is None:
            return dg.AssetCheckResult(
                passed=False,
                description=f"target table {job.target.table} does not exist",
                metadata=meta,
            )
        meta["pgferry/difference"] = target - source
        scope = f"partition {job.partition.name!r}" if job.partition else "the whole table"
        return dg.AssetCheckResult(
            passed=source == target,
            description=f"{source} source rows, {target} target rows in {scope}",
            metadata=meta,
        )

    return _check


def _no_rejects_check(info: PgferryAssetInfo, blocking: bool) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=info.key,
        name=NO_REJECTS_CHECK,
        description="The latest pgferry run set no rows aside in the rejects table.",
        blocking=blocking,
        partitions_def=info.partitions_def,
    )
    def _check(
        context: dg.AssetCheckExecutionContext, pgferry: PgferryResource
    ) -> dg.AssetCheckResult:
        warn = dg.AssetCheckSeverity.WARN
        key = _partition_key(context)
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=info.key, asset_partitions=[key] if key else None),
            limit=1,
        ).records
        materialization = records[0].asset_materialization if records else None
        meta_in = materialization.metadata if materialization else {}
        if "pgferry/rows_rejected" not in meta_in or "pgferry/run_id" not in meta_in:
            return dg.AssetCheckResult(
                passed=False,
                severity=warn,
                description="no pgferry materialisation of this asset (partition) yet",
            )
        rejected = int(meta_in["pgferry/rows_rejected"].value)
        run_id = str(meta_in["pgferry/run_id"].value)
        meta: dict[str, Any] = {"pgferry/rows_rejected": rejected, "pgferry/run_id": run_id}
        if rejected:
            job = pgferry.resolve(info.job_for(key))
            try:
                groups = asyncio.run(_tables.rejects_of_run(job, run_id))
            except PgferryError as exc:
                groups = []
                meta["pgferry/error"] = str(exc)
            meta["pgferry/rejects"] = dg.MetadataValue.json(
                [
                    {
                        "stage": g.stage,
                        "error_class": g.error_class,
                        "column": g.column,
                        "rows": g.rows,
                    }
                    for g in groups
                ]
            )
        return dg.AssetCheckResult(
            passed=rejected == 0,
            severity=warn,
            description=(
                f"run {run_id} set {rejected} rows aside in {info.job.state_schema}.rejects"
                if rejected
                else f"run {run_id} rejected no rows"
            ),
            metadata=meta,
        )

    return _check
