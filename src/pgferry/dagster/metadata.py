"""RunResult and table descriptions as Dagster metadata (nothing is parsed from logs).

Standard keys (:class:`dagster.TableMetadataSet`): ``dagster/row_count`` (the whole table),
``dagster/partition_row_count`` (the partition), ``dagster/table_name``,
``dagster/column_schema``, ``dagster/column_lineage``. pgferry's own keys sit under
``pgferry/`` and come one for one from :meth:`pgferry.RunResult.to_dict`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg

from pgferry import lineage

try:
    from dagster import TableMetadataSet  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # Dagster 1.13 defines it (and documents it) but does not export it
    from dagster._core.definitions.metadata.metadata_set import TableMetadataSet
from pgferry.errors import PgferryError, Transient
from pgferry.result import RunResult
from pgferry.schema import Column

__all__ = [
    "LINEAGE_ATTR",
    "column_lineage",
    "declared_lineage",
    "failure_metadata",
    "result_metadata",
    "table_metadata",
    "table_schema",
]

LINEAGE_ATTR = lineage.LINEAGE_ATTR
"""The attribute in which a transform declares its column lineage; set it with
:func:`pgferry.column_lineage`::

    @pgferry.column_lineage(email_domain=["email"])
    def clean(row): ...
"""

_COUNTERS = (
    "rows_read",
    "rows_written",
    "rows_rejected",
    "rows_deleted",
    "batches",
    "attempts",
    "bytes_written",
    "workers",
)
_TEXTS = ("run_id", "job", "status", "mode", "path", "started_at", "finished_at")


def _text_or_null(value: Any) -> dg.MetadataValue[Any]:
    return dg.MetadataValue.null() if value is None else dg.MetadataValue.text(str(value))


def result_metadata(result: RunResult) -> dict[str, dg.MetadataValue[Any]]:
    """The run's counters, watermarks, timings and stage statistics under ``pgferry/``.

    Keys: ``run_id``, ``job``, ``partition`` (when set), ``status``, ``mode``, ``path``,
    ``started_at``, ``finished_at`` (text); ``rows_read``, ``rows_written``,
    ``rows_rejected``, ``rows_deleted``, ``batches``, ``attempts``, ``bytes_written``,
    ``workers`` (int); ``duration_s`` and ``<stage>_busy_s`` / ``<stage>_wait_s`` for the
    ``extract``, ``transform`` and ``load`` stages (float, seconds); ``watermark_before`` and
    ``watermark_after`` (text, or null without an incremental position); ``schema_changes``
    (JSON: the changes the schema step made, ``{column, change, from, to}``); ``error``
    (failed runs only).
    """
    data = result.to_dict()
    meta: dict[str, dg.MetadataValue[Any]] = {}
    for name in _TEXTS:
        meta[f"pgferry/{name}"] = dg.MetadataValue.text(str(data[name]))
    if data["partition"]:
        meta["pgferry/partition"] = dg.MetadataValue.text(data["partition"])
    for name in _COUNTERS:
        meta[f"pgferry/{name}"] = dg.MetadataValue.int(int(data[name]))
    meta["pgferry/duration_s"] = dg.MetadataValue.float(float(data["duration_s"]))
    meta["pgferry/watermark_before"] = _text_or_null(data["watermark_before"])
    meta["pgferry/watermark_after"] = _text_or_null(data["watermark_after"])
    for stage, stats in data["stages"].items():
        meta[f"pgferry/{stage}_busy_s"] = dg.MetadataValue.float(float(stats["busy_s"]))
        meta[f"pgferry/{stage}_wait_s"] = dg.MetadataValue.float(float(stats["wait_s"]))
    # Beside ``dagster/column_schema`` (the target as it is after the run).
    meta["pgferry/schema_changes"] = dg.MetadataValue.json(data["schema_changes"])
    if data["error"] is not None:
        meta["pgferry/error"] = dg.MetadataValue.text(data["error"])
    return meta


def failure_metadata(exc: PgferryError) -> dict[str, dg.MetadataValue[Any]]:
    """Metadata of a failed run: the error's context and, when known, its RunResult."""
    result = exc.result
    meta = result_metadata(result) if result is not None else {}
    meta["pgferry/error_class"] = dg.MetadataValue.text(type(exc).__name__)
    meta["pgferry/retryable"] = dg.MetadataValue.bool(isinstance(exc, Transient))
    for name in ("stage", "batch", "column"):
        value = getattr(exc, name, None)
        if value is not None:
            meta[f"pgferry/error_{name}"] = (
                dg.MetadataValue.int(value)
                if isinstance(value, int)
                else dg.MetadataValue.text(value)
            )
    return meta


def table_schema(columns: Sequence[Column]) -> dg.TableSchema:
    """A table's columns with their exact PostgreSQL types (``numeric(12,2)``, ``text[]``)."""
    return dg.TableSchema(columns=[dg.TableColumn(name=c.name, type=c.type) for c in columns])


def declared_lineage(transform: str | Callable[..., Any] | None) -> dict[str, list[str]] | None:
    """What a transform declares with :func:`pgferry.column_lineage`: output column to the
    source columns it is computed from.

    Unlike :func:`pgferry.lineage.declared_lineage`, this never raises: metadata must not fail
    a load that has committed, so a transform that cannot be imported or declares something
    malformed counts as declaring nothing (``None``).
    """
    try:
        return lineage.declared_lineage(transform)
    except Exception:
        return None


def column_lineage(
    target_columns: Sequence[str],
    source_columns: Sequence[str],
    source: dg.AssetKey,
    *,
    transformed: bool = False,
    declared: Mapping[str, Sequence[str]] | None = None,
) -> dg.TableColumnLineage:
    """Each target column mapped to the columns of the source asset it comes from.

    The rules are those of :func:`pgferry.lineage.map_columns`, shared with the Airflow
    integration's OpenLineage column lineage. Target columns that come from no source column
    (not fed without a transform, or declared from columns the source lacks) have no entry.
    """
    mapping = lineage.map_columns(
        source_columns, target_columns, transformed=transformed, declared=declared
    )
    return dg.TableColumnLineage(
        deps_by_column={
            column: [dg.TableColumnDep(asset_key=source, column_name=c) for c in reads]
            for column, (reads, _) in mapping.items()
            if reads
        }
    )


def table_metadata(
    *,
    table_name: str,
    columns: Sequence[Column] | None = None,
    row_count: int | None = None,
    partition_row_count: int | None = None,
    lineage: dg.TableColumnLineage | None = None,
) -> dict[str, Any]:
    """The standard ``dagster/`` table keys that are known, by Dagster's meaning
    (:class:`dagster.TableMetadataSet`): ``dagster/row_count`` is the rows of the whole table,
    ``dagster/partition_row_count`` those of the materialised partition."""
    return dict(
        TableMetadataSet(
            table_name=table_name,
            row_count=row_count,
            partition_row_count=partition_row_count,
            column_schema=table_schema(columns) if columns is not None else None,
            column_lineage=lineage,
        )
    )
