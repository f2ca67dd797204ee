"""The asset factory: one pgferry job as one Dagster asset.

The asset runs the job through the ``pgferry`` resource and publishes the RunResult as
``MaterializeResult`` metadata. Partitions map onto pgferry partitions that reload their slice
of the target in one transaction, so that re-materialising a partition is idempotent; that
mapping, and the record of what each asset was built from, live in ``_asset_info``.
"""

# No `from __future__ import annotations`: Dagster reads the asset functions' annotations
# (the context type, the resource parameter) at definition time.
import asyncio
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import dagster as dg

from pgferry.dagster import _tables
from pgferry.dagster._asset_info import PgferryAssetInfo, partitioning, register
from pgferry.dagster.metadata import (
    column_lineage,
    declared_lineage,
    failure_metadata,
    result_metadata,
    table_metadata,
)
from pgferry.dagster.resource import PgferryResource
from pgferry.dagster.translator import PgferryTranslator, PgferryTranslatorData
from pgferry.errors import ConfigError, PgferryError, Transient
from pgferry.httpspec import mask_url
from pgferry.jobfile import apply_overrides, load_job
from pgferry.result import RunResult
from pgferry.spec import Job, Partition

__all__ = ["DEFAULT_RETRY_POLICY", "pgferry_asset"]

DEFAULT_RETRY_POLICY = dg.RetryPolicy(
    max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
"""Retries after a transient failure: about 30 s, 60 s and 120 s later.

pgferry retries transient errors itself first (``Job.max_retries``, a few seconds apart); this
policy covers longer outages. Every retry resumes from the ledger in the target database.
"""


# --- The factory -----------------------------------------------------------------------------


def _build_job(
    job: Job | Mapping[str, Any] | str | os.PathLike[str] | None,
    *,
    name: str | None,
    key: dg.AssetKey | str | Sequence[str] | None,
    source_table: str | Sequence[str] | None,
    source_query: str | None,
    target_table: str | Sequence[str] | None,
    transform: str | Callable[..., Any] | None,
    mode: str | None,
    key_columns: str | Sequence[str] | None,
    incremental_column: str | None,
    time_partitioned: bool,
    options: Mapping[str, Any] | None,
    target_url: str | None = None,
) -> Job:
    described = {
        "source_table": source_table,
        "source_query": source_query,
        "target_table": target_table,
        "target_url": target_url,
        "transform": transform,
        "mode": mode,
        "key_columns": key_columns,
    }
    given = [k for k, v in described.items() if v is not None]
    if job is not None:
        if given:
            raise ConfigError(
                f"pgferry_asset: give either job= or {', '.join(given)}, not both "
                "(use options= to change a job)"
            )
        if isinstance(job, Job):
            base = job
        elif isinstance(job, Mapping):
            base = Job.from_dict(job)
        else:
            base = load_job(Path(job))
        data = base.model_dump(exclude_unset=True)
        if incremental_column is not None and not time_partitioned:
            data["incremental"] = {**(data.get("incremental") or {}), "column": incremental_column}
        elif not options:
            return base
    else:
        if (target_table is None) == (target_url is None) or (source_table is None) == (
            source_query is None
        ):
            raise ConfigError(
                "pgferry_asset: give job=, or target_table and one of source_table or "
                "source_query (or target_url instead of target_table)"
            )
        source: dict[str, Any] = {"key": key_columns}
        if source_table is not None:
            source["table"] = source_table
        else:
            source["query"] = source_query
        data = {
            "source": source,
            "target": (
                {"http": {"url": target_url}}
                if target_url is not None
                else {"table": target_table, "mode": mode or "append", "key": key_columns}
            ),
            "transform": transform,
        }
        if name:
            data["name"] = name
        elif key is not None:
            data["name"] = dg.AssetKey.from_coercible(key).to_user_string()
        if incremental_column is not None and not time_partitioned:
            data["incremental"] = {"column": incremental_column}
    if options:
        data = apply_overrides(data, options)
    return Job.from_dict(data, "pgferry_asset job")


def _op_name(key: dg.AssetKey) -> str:
    return "pgferry_" + re.sub(r"\W", "_", "__".join(key.path))


def pgferry_asset(
    job: Job | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    name: str | None = None,
    key: dg.AssetKey | str | Sequence[str] | None = None,
    source_table: str | Sequence[str] | None = None,
    source_query: str | None = None,
    target_table: str | Sequence[str] | None = None,
    transform: str | Callable[..., Any] | None = None,
    mode: Literal["append", "upsert", "replace"] | None = None,
    key_columns: str | Sequence[str] | None = None,
    incremental_column: str | None = None,
    options: Mapping[str, Any] | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
    partitions: Sequence[Partition] | None = None,
    retry_policy: dg.RetryPolicy | None = None,
    group_name: str | None = None,
    deps: Iterable[dg.AssetKey | str | Sequence[str] | dg.AssetSpec | dg.AssetsDefinition]
    | None = None,
    description: str | None = None,
    owners: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    op_tags: Mapping[str, Any] | None = None,
    pool: str | None = None,
    translator: PgferryTranslator | None = None,
    target_url: str | None = None,
) -> dg.AssetsDefinition:
    """Build a Dagster asset that runs one pgferry job with the ``pgferry`` resource.

    Describe the job either with ``job=`` (a :class:`pgferry.Job`, a mapping or the path of
    a job file) or with the keywords ``source_table`` / ``source_query``, ``target_table``,
    ``transform``, ``mode``, ``key_columns`` and ``incremental_column``. DSNs may be left out
    when the resource provides them.

    Every materialisation is safe to repeat:

    * unpartitioned: ``upsert`` and ``replace`` rewrite the same rows; an ``append`` must be
      incremental (``incremental_column``) and then reads only rows it has not read before.
      A full ``append`` is refused, since each materialisation would add every row again;
    * time-window partitions (``partitions_def`` daily, hourly…, with ``incremental_column``):
      a partition deletes the target rows whose ``incremental_column`` lies in its window and
      loads that window from the source again, in one transaction;
    * key-range partitions (``partitions=pgferry.plan_partitions(job, n)``): the same per key
      range, in parallel runs if you like.

    Args:
        job: The job; exclusive with the job-describing keywords.
        name: The asset's name (its key is ``[name]``) and, with keywords, the job's name.
        key: The asset key, instead of ``name``.
        source_table: The source table (``schema.table``).
        source_query: Or a query whose rows are loaded.
        target_table: The target table; created when missing.
        transform: ``package.module:function`` or a callable (see :class:`pgferry.Job`).
        mode: ``append`` (default), ``upsert`` (needs ``key_columns``) or ``replace``.
        key_columns: Columns identifying a row: the source key (order, resuming, key
            ranges) and the target key (upsert; a unique index on a created table).
        incremental_column: The column that grows (``updated_at``): unpartitioned, only new
            rows are read; with time-window partitions, the column the windows slice.
        options: More job settings as dotted keys (``{"max_rejects": 10,
            "target.columns": {"email_domain": "text"}}``), applied to ``job`` too.
        partitions_def: Time-window partitions (with ``incremental_column``), or static
            partitions whose keys are the names of ``partitions``.
        partitions: Key ranges from :func:`pgferry.plan_partitions` (or ``pgferry plan
            --json``); their names become static partition keys.
        retry_policy: Dagster's retries after a transient failure; default
            :data:`DEFAULT_RETRY_POLICY`. Terminal failures are never retried.
        group_name: The asset group.
        deps: More upstream assets (the source table is one already).
        description: Replaces the generated description.
        owners: Asset owners.
        tags: Asset tags.
        op_tags: Tags of the underlying op (e.g. concurrency limits).
        pool: The concurrency pool of the asset's runs.
        translator: Customises the asset specs of the target and of the source.
        target_url: Send the rows to this HTTP endpoint instead of a table (``target.http``;
            more settings through ``options={"target.http.rows_per_request": 100}``). The
            ledger goes to the resource's ``state_dsn``. Every materialisation sends the rows
            again under the same idempotency keys (an incremental one only the new rows), so
            a server that honours the keys applies each row once. A partition sends its
            window or key range again (under the same keys) instead of reloading a slice.

    Returns:
        The asset, whose function takes the ``pgferry`` resource (:class:`PgferryResource`).

    Raises:
        ConfigError: The job is invalid, incomplete or would not be safe to re-materialise,
            or the partitions do not fit it.
    """
    if name is not None and key is not None:
        raise ConfigError("pgferry_asset: give name or key, not both")
    is_window = isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
    base = _build_job(
        job,
        name=name,
        key=key,
        source_table=source_table,
        source_query=source_query,
        target_table=target_table,
        transform=transform,
        mode=mode,
        key_columns=key_columns,
        incremental_column=incremental_column,
        time_partitioned=is_window,
        options=options,
        target_url=target_url,
    )
    partitions_def, time_column, ranges = partitioning(
        base, partitions_def, partitions, incremental_column
    )
    full_append = base.target.http is None and base.target.mode == "append"
    if partitions_def is None and base.incremental is None and full_append:
        raise ConfigError(
            f"job {base.name!r}: a full 'append' would add every source row again each time "
            "the asset is materialised; use mode 'upsert' (with key_columns) or 'replace', "
            "set incremental_column, or partition the asset",
            job=base.name,
        )
    if base.partition is not None:
        raise ConfigError(
            f"job {base.name!r} has a partition: let the asset's partitions choose it",
            job=base.name,
        )

    translator = translator or PgferryTranslator()
    spec = translator.get_asset_spec(PgferryTranslatorData(base, "target"))
    source_spec = (
        translator.get_asset_spec(PgferryTranslatorData(base, "source"))
        if base.source.table is not None
        else None
    )
    if key is not None:
        spec = spec.replace_attributes(key=dg.AssetKey.from_coercible(key))
    elif name is not None:
        spec = spec.replace_attributes(key=dg.AssetKey([name]))
    if group_name is not None:
        spec = spec.replace_attributes(group_name=group_name)
    if description is not None:
        spec = spec.replace_attributes(description=description)
    if owners is not None:
        spec = spec.replace_attributes(owners=owners)
    if deps:
        spec = spec.replace_attributes(deps=[*spec.deps, *deps])
    spec = spec.merge_attributes(
        metadata={"pgferry/job": dg.MetadataValue.json(base.describe())}, tags=tags or {}
    )

    info = PgferryAssetInfo(
        key=spec.key,
        job=base,
        source_spec=source_spec,
        partitions_def=partitions_def,
        time_column=time_column,
        ranges=ranges,
    )

    @dg.multi_asset(
        name=_op_name(spec.key),
        specs=[spec],
        partitions_def=partitions_def,
        retry_policy=retry_policy or DEFAULT_RETRY_POLICY,
        op_tags=op_tags,
        pool=pool,
    )
    def _pgferry_asset(
        context: dg.AssetExecutionContext, pgferry: PgferryResource
    ) -> dg.MaterializeResult[Any]:
        return _materialize(context, pgferry, info)

    register(info)
    return _pgferry_asset


# --- Running ---------------------------------------------------------------------------------


def _partition_of(context: dg.AssetExecutionContext, info: PgferryAssetInfo) -> Job:
    if info.partitions_def is None:
        return info.job
    if info.time_column is not None:
        keys = context.partition_keys
        name = keys[0] if len(keys) == 1 else f"{keys[0]}..{keys[-1]}"
        return info.job_for(name, context.partition_time_window)
    return info.job_for(context.partition_key)


def _materialize(
    context: dg.AssetExecutionContext, resource: PgferryResource, info: PgferryAssetInfo
) -> dg.MaterializeResult[Any]:
    try:
        job = _partition_of(context, info)
        result = resource.run(job, log=context.log)
    except PgferryError as exc:
        raise _failure(exc, context) from exc
    meta: dict[str, Any] = dict(result_metadata(result))
    meta.update(_target_metadata(resource.resolve(job), result, info, context))
    return dg.MaterializeResult(metadata=meta)


def _failure(exc: PgferryError, context: dg.AssetExecutionContext) -> dg.Failure:
    transient = isinstance(exc, Transient)
    if transient:
        what = (
            "failed with a transient error; it is retried per the asset's RetryPolicy and "
            "resumes from the last committed batch"
        )
    else:
        what = "failed with an error that a retry would not fix, so it is not retried"
    context.log.error(f"pgferry: {what}: {exc}")
    return dg.Failure(
        description=f"pgferry {what}: {exc}",
        metadata=failure_metadata(exc),
        allow_retries=transient,
    )


def _target_metadata(
    job: Job, result: RunResult, info: PgferryAssetInfo, context: dg.AssetExecutionContext
) -> dict[str, Any]:
    """The ``dagster/`` table keys; a failure here is logged, never failing a committed load.

    ``dagster/row_count`` is the whole table's rows and ``dagster/partition_row_count`` the
    partition's, as Dagster means them. A reload (``replace``, or a partition replaced in one
    transaction) leaves exactly the rows it wrote in its scope: that count needs no scan.
    """
    if job.target.http is not None:
        # An endpoint holds no table to count: the rows this run delivered.
        return {
            "dagster/row_count": dg.MetadataValue.int(result.rows_written),
            "pgferry/endpoint": dg.MetadataValue.text(str(mask_url(job.target.http.url))),
        }
    part = job.partition
    replaced_table = job.target.mode == "replace" and part is None
    reloaded_partition = part is not None and part.replace
    try:
        target, source = asyncio.run(
            _describe(
                job,
                count=not replaced_table,
                count_partition=part is not None and not reloaded_partition,
                lineage=info.source_spec,
            )
        )
    except Exception as exc:
        context.log.warning(f"pgferry: could not describe the target for metadata: {exc}")
        return table_metadata(
            table_name=str(job.target.table),
            row_count=result.rows_written if replaced_table else None,
            partition_row_count=result.rows_written if reloaded_partition else None,
        )
    if target is None:  # e.g. a replace of nothing with no existing table
        return table_metadata(table_name=str(job.target.table), row_count=0)
    lineage = None
    if info.source_spec is not None and source is not None:
        lineage = column_lineage(
            [c.name for c in target.columns],
            [c.name for c in source],
            info.source_spec.key,
            transformed=job.transform is not None,
            declared=declared_lineage(job.transform),
        )
    return table_metadata(
        table_name=target.table_name,
        columns=target.columns,
        row_count=result.rows_written if replaced_table else target.row_count,
        partition_row_count=(
            result.rows_written if reloaded_partition else target.partition_row_count
        ),
        lineage=lineage,
    )


async def _describe(
    job: Job, *, count: bool, count_partition: bool, lineage: dg.AssetSpec | None
) -> tuple[_tables.TargetInfo | None, list[Any] | None]:
    target = _tables.describe_target(job, count=count, count_partition=count_partition)
    if lineage is None:
        return await target, None
    found, source = await asyncio.gather(target, _tables.source_columns(job))
    return found, source
