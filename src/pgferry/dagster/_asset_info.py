"""What pgferry knows about the assets it built, and how their partitions map onto pgferry's.

:func:`~pgferry.dagster.pgferry_asset` records a :class:`PgferryAssetInfo` for each asset; the
checks and :func:`pgferry_source_specs` read it back. Every Dagster partition becomes a
:class:`pgferry.Partition` that reloads its slice of the target (``replace=True``), so that
re-materialising a partition is idempotent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from pgferry.errors import ConfigError
from pgferry.spec import Job, Partition

__all__ = [
    "PgferryAssetInfo",
    "partitioning",
    "pgferry_asset_info",
    "pgferry_source_specs",
    "register",
]


@dataclass(frozen=True)
class PgferryAssetInfo:
    """What :func:`~pgferry.dagster.pgferry_asset` knows about an asset it built.

    Checks and source specs read it back through :func:`pgferry_asset_info`.

    Attributes:
        key: The asset key.
        job: The job as declared: no partition, DSNs possibly unset.
        source_spec: The external asset standing for the source table (``None`` for a query).
        partitions_def: The asset's partitions, if any.
        time_column: The source column that time-window partitions slice.
        ranges: Key-range partitions by name (static partitions from ``partitions=``).
    """

    key: dg.AssetKey
    job: Job
    source_spec: dg.AssetSpec | None
    partitions_def: dg.PartitionsDefinition | None = None
    time_column: str | None = None
    ranges: Mapping[str, Partition] = field(default_factory=dict)

    def job_for(self, partition_key: str | None, window: dg.TimeWindow | None = None) -> Job:
        """The job that loads one partition (``window`` covers a range of time partitions).

        Raises:
            ConfigError: The asset is partitioned and no partition key was given, or the key
                is unknown.
        """
        if self.partitions_def is None:
            return self.job
        if partition_key is None:
            raise ConfigError(f"asset {self.key.to_user_string()} is partitioned: give a partition")
        if self.time_column is not None:
            if window is None:
                assert isinstance(self.partitions_def, dg.TimeWindowPartitionsDefinition)
                window = self.partitions_def.time_window_for_partition_key(partition_key)
            part = _window_partition(partition_key, self.time_column, window)
        else:
            try:
                part = self.ranges[partition_key]
            except KeyError:
                raise ConfigError(
                    f"asset {self.key.to_user_string()} has no partition {partition_key!r}"
                ) from None
            part = Partition(**{**part.model_dump(), "replace": True})
        return _with_partition(self.job, part)


def _window_partition(name: str, column: str, window: dg.TimeWindow) -> Partition:
    return Partition(
        name=name,
        column=column,
        lower=window.start.isoformat(),
        upper=window.end.isoformat(),
        replace=True,
    )


def _with_partition(job: Job, part: Partition) -> Job:
    # A reloaded window must be read whole: an incremental position would skip rows that the
    # window's delete has just removed.
    return job.with_overrides(partition=part.model_dump(), incremental=None)


# Filled as pgferry_asset() builds assets, so that checks and specs can find their job.
_INFOS: dict[dg.AssetKey, PgferryAssetInfo] = {}


def register(info: PgferryAssetInfo) -> None:
    """Record an asset that :func:`~pgferry.dagster.pgferry_asset` built."""
    _INFOS[info.key] = info


def pgferry_asset_info(asset: dg.AssetsDefinition | dg.AssetKey) -> PgferryAssetInfo:
    """The :class:`PgferryAssetInfo` of an asset built by :func:`~pgferry.dagster.pgferry_asset`.

    Raises:
        ConfigError: The asset was not built by :func:`~pgferry.dagster.pgferry_asset` in
            this process.
    """
    key = asset if isinstance(asset, dg.AssetKey) else asset.key
    try:
        return _INFOS[key]
    except KeyError:
        raise ConfigError(
            f"asset {key.to_user_string()} was not built by pgferry_asset()"
        ) from None


def pgferry_source_specs(*assets: dg.AssetsDefinition) -> list[dg.AssetSpec]:
    """The external source-table assets of pgferry assets, one per key.

    Put them in ``Definitions(assets=[...])`` next to the pgferry assets so that the graph
    shows source → target lineage with the source table's name and description.
    """
    specs: dict[dg.AssetKey, dg.AssetSpec] = {}
    for asset in assets:
        spec = pgferry_asset_info(asset).source_spec
        if spec is not None:
            specs.setdefault(spec.key, spec)
    return list(specs.values())


def partitioning(
    job: Job,
    partitions_def: dg.PartitionsDefinition | None,
    partitions: Sequence[Partition] | None,
    incremental_column: str | None,
) -> tuple[dg.PartitionsDefinition | None, str | None, dict[str, Partition]]:
    """The partitions definition, the time column and the key ranges, checked against the job.

    Raises:
        ConfigError: The partitions do not fit the job (see :func:`~pgferry.dagster.pgferry_asset`).
    """
    if partitions is not None:
        ranges = {p.name: p for p in partitions}
        if not ranges or len(ranges) != len(partitions):
            raise ConfigError(f"job {job.name!r}: partitions need distinct names", job=job.name)
        if partitions_def is None:
            partitions_def = dg.StaticPartitionsDefinition(list(ranges))
        elif not isinstance(partitions_def, dg.StaticPartitionsDefinition) or set(
            partitions_def.get_partition_keys()
        ) != set(ranges):
            raise ConfigError(
                f"job {job.name!r}: partitions_def must be static with the names of "
                "partitions as keys (or leave it out)",
                job=job.name,
            )
        for part in ranges.values():
            _with_partition(job, Partition(**{**part.model_dump(), "replace": True}))
        return partitions_def, None, ranges
    if partitions_def is None:
        return None, None, {}
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        raise ConfigError(
            f"job {job.name!r}: partitions_def must be a time-window definition (daily, "
            "hourly…) with incremental_column, or give partitions= (key ranges)",
            job=job.name,
        )
    column = incremental_column or (job.incremental.column if job.incremental else None)
    if column is None:
        raise ConfigError(
            f"job {job.name!r}: time-window partitions need incremental_column, the column "
            "the windows slice",
            job=job.name,
        )
    probe = dg.TimeWindow(start=_EPOCH, end=_EPOCH)
    _with_partition(job, _window_partition("probe", column, probe))  # validates the mode
    return partitions_def, column, {}


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
