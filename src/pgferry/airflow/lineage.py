"""OpenLineage for :class:`~pgferry.airflow.PgferryOperator`: datasets, schemas, column lineage.

Column lineage follows the rules of :mod:`pgferry.lineage` (shared with the Dagster
integration): without a transform, every target column that the source also has maps 1:1
(``IDENTITY``); with a transform, a column the transform declares maps to the source columns it
declares, a column with a source column of the same name maps 1:1, and any other column the
transform created maps to every source column, since any of them may feed it. A transform
declares what it reads with :func:`pgferry.column_lineage`::

    @pgferry.column_lineage(first_name=["name"], last_name=["name"])
    def clean(row): ...

For a source query, the query is parsed (OpenLineage's SQL parser) to find the tables and
columns behind each output column.

The OpenLineage provider is optional: without it nothing here is imported, and
:func:`operator_lineage` is never called. Nothing here may fail a task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pgferry.connection import close_quietly, connect
from pgferry.engine.plan import describe_source
from pgferry.lineage import LINEAGE_ATTR, declared_lineage, map_columns
from pgferry.schema import Column, describe_table
from pgferry.spec import Job
from pgferry.sql import TableName

__all__ = [
    "LINEAGE_ATTR",
    "DatasetRef",
    "LineageInfo",
    "declared_lineage",
    "gather",
    "map_columns",
    "operator_lineage",
]

# LINEAGE_ATTR, declared_lineage and map_columns live in the core (pgferry.lineage), shared
# with the Dagster integration; they stay importable from here.

# The OpenLineage listener gives extraction about ten seconds; introspection must fit in it.
_INTROSPECTION_TIMEOUT = 6.0


@dataclass(frozen=True)
class DatasetRef:
    """An OpenLineage dataset identity: ``postgres://host:port`` and ``db.schema.table``."""

    namespace: str
    name: str


def dataset_of(hook: Any, table: str | TableName) -> DatasetRef:
    """The dataset of ``table`` on the server of ``hook`` (a :class:`~pgferry.airflow.hooks.
    PgferryHook`, or the operator's stand-in built from a connection URI)."""
    return DatasetRef(hook.openlineage_namespace, hook.openlineage_name(table))


@dataclass
class LineageInfo:
    """Everything lineage needs, as plain data.

    Attributes:
        source: The source table's dataset (``None`` for a source query).
        target: The target table's dataset.
        source_columns: Columns the source (table or query) yields, with types.
        target_columns: Columns of the target table after the run, with types.
        query_inputs: For a source query: each table it reads, with its columns (when known).
        query_lineage: For a source query: each output column's ``(dataset, column)`` origins.
        transformed: Whether a transform ran.
        transform_name: The transform's import path, for descriptions.
        declared: The column lineage the transform declares, if any.
    """

    source: DatasetRef | None
    target: DatasetRef
    source_columns: list[Column] = field(default_factory=list)
    target_columns: list[Column] = field(default_factory=list)
    query_inputs: dict[DatasetRef, list[Column]] = field(default_factory=dict)
    query_lineage: dict[str, list[tuple[DatasetRef, str]]] = field(default_factory=dict)
    transformed: bool = False
    transform_name: str | None = None
    declared: dict[str, list[str]] | None = None


def _parse_query(query: str) -> Any:
    try:
        from airflow.providers.openlineage.sqlparser import SQLParser
    except ImportError:
        return None
    try:
        return SQLParser(dialect="postgres", default_schema="public").parse(query)
    except Exception:  # a query the parser cannot read: no input tables, no column lineage
        return None


async def _describe(job: Job, inputs: Sequence[TableName]) -> tuple[Any, ...]:
    timeout = min(job.connect_timeout, _INTROSPECTION_TIMEOUT / 2)
    src = tgt = None
    try:
        src = await connect(job.source.dsn, role="source", job=job.name, timeout=timeout)
        _, source_columns, _ = await describe_source(src, job)
        input_columns = [await describe_table(src, t) for t in inputs]
        if job.target.http is not None:  # an endpoint: rows go as the source gives them
            return source_columns, [] if job.transform else source_columns, input_columns
        tgt = await connect(job.target.dsn, role="target", job=job.name, timeout=timeout)
        target_columns = await describe_table(tgt, job.target.pg_table)
        return source_columns, target_columns or [], input_columns
    finally:
        await close_quietly(src)
        await close_quietly(tgt)


def _run_coroutine(coro_fn: Callable[[], Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro_fn(), _INTROSPECTION_TIMEOUT)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, bounded()).result()


def gather(
    job: Job,
    *,
    source: DatasetRef | None,
    target: DatasetRef,
    namespace: str,
    database: str,
    introspect: bool = True,
) -> LineageInfo:
    """Collect :class:`LineageInfo` for a job (reads both catalogs unless ``introspect`` is off).

    Args:
        job: The job, with DSNs.
        source: The source table's dataset, or ``None`` for a source query.
        target: The target table's dataset.
        namespace: The source server's OpenLineage namespace (for the tables a query reads).
        database: The source database name.
        introspect: Read column names and types from both servers.
    """
    info = LineageInfo(source=source, target=target, transformed=job.transform is not None)
    if job.transform is not None:
        info.transform_name = (
            job.transform
            if isinstance(job.transform, str)
            else f"{getattr(job.transform, '__module__', '?')}:"
            f"{getattr(job.transform, '__qualname__', '?')}"
        )
        try:
            info.declared = declared_lineage(job.transform)
        except Exception:  # unimportable, or a malformed declaration: new columns map to all
            info.declared = None
    input_tables: list[TableName] = []
    if job.source.query is not None:
        meta = _parse_query(job.source.query)
        refs: dict[tuple[str, str], DatasetRef] = {}
        for table in getattr(meta, "in_tables", None) or []:
            schema = table.schema or "public"
            ref = DatasetRef(namespace, f"{database}.{schema}.{table.name}")
            refs[(schema, table.name)] = ref
            info.query_inputs[ref] = []
            input_tables.append(TableName(schema, table.name))
        for item in getattr(meta, "column_lineage", None) or []:
            origins = []
            for col in item.lineage:
                origin = col.origin
                if origin is None:
                    continue
                found = refs.get((origin.schema or "public", origin.name))
                if found is not None:
                    origins.append((found, col.name))
            info.query_lineage[item.descendant.name] = origins
    if introspect:
        source_columns, target_columns, input_columns = _run_coroutine(
            lambda: _describe(job, input_tables)
        )
        info.source_columns = list(source_columns)
        info.target_columns = list(target_columns)
        for ref, columns in zip(list(info.query_inputs), input_columns, strict=True):
            info.query_inputs[ref] = list(columns or [])
    return info


def _origins(info: LineageInfo, column: str) -> list[tuple[DatasetRef, str]]:
    """Where one source column comes from: the source table, or the tables a query reads."""
    if info.source is not None:
        return [(info.source, column)]
    if column in info.query_lineage:
        return info.query_lineage[column]
    # The parser cannot trace ``SELECT *``; a query of one table yields that table's columns.
    if len(info.query_inputs) == 1:
        ((ref, columns),) = info.query_inputs.items()
        if column in {c.name for c in columns}:
            return [(ref, column)]
    return []


def operator_lineage(info: LineageInfo, result: Mapping[str, Any] | None) -> Any:
    """Build the provider's ``OperatorLineage`` (needs the OpenLineage provider installed).

    Args:
        info: What :func:`gather` collected.
        result: The run's ``RunResult.to_dict()`` (output statistics), if the run succeeded.
    """
    from airflow.providers.common.compat.openlineage.facet import (
        ColumnLineageDatasetFacet,
        Dataset,
        Fields,
        InputField,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
        SchemaDatasetFacet,
        SchemaDatasetFacetFields,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    transformation: Any
    try:
        from openlineage.client.generated.column_lineage_dataset import (
            Transformation as transformation,
        )
    except ImportError:  # an older client: lineage without transformation types
        transformation = None

    def schema_facet(columns: Sequence[Column]) -> dict[str, Any]:
        if not columns:
            return {}
        fields = [SchemaDatasetFacetFields(name=c.name, type=c.type) for c in columns]
        return {"schema": SchemaDatasetFacet(fields=fields)}

    inputs: list[Any] = []
    if info.source is not None:
        inputs.append(
            Dataset(
                namespace=info.source.namespace,
                name=info.source.name,
                facets=schema_facet(info.source_columns),
            )
        )
    for ref, columns in info.query_inputs.items():
        inputs.append(Dataset(namespace=ref.namespace, name=ref.name, facets=schema_facet(columns)))

    descriptions = {
        "identity": ("IDENTITY", "copied unchanged"),
        "same-name": ("TRANSFORMATION", f"through transform {info.transform_name}"),
        "declared": ("TRANSFORMATION", f"computed by transform {info.transform_name}"),
        "all": ("TRANSFORMATION", f"created by transform {info.transform_name}"),
    }
    mapping = map_columns(
        [c.name for c in info.source_columns],
        [c.name for c in info.target_columns],
        transformed=info.transformed,
        declared=info.declared,
    )
    fields: dict[str, Any] = {}
    for column, (reads, how) in mapping.items():
        subtype, description = descriptions[how]
        input_fields = []
        for read in reads:
            for ref, name in _origins(info, read):
                transformations = (
                    [transformation(type="DIRECT", subtype=subtype, description=description)]
                    if transformation is not None
                    else []
                )
                input_fields.append(
                    InputField(
                        namespace=ref.namespace,
                        name=ref.name,
                        field=name,
                        transformations=transformations,
                    )
                )
        if input_fields:
            fields[column] = Fields(
                inputFields=input_fields,
                # Deprecated in the facet's 1-2-0 schema (``transformations`` above replace
                # them) but still read by some consumers.
                transformationType="IDENTITY" if how == "identity" else "TRANSFORMATION",
                transformationDescription=description,
            )

    facets = schema_facet(info.target_columns)
    if fields:
        facets["columnLineage"] = ColumnLineageDatasetFacet(fields=fields)
    output_facets: dict[str, Any] = {}
    if result is not None:
        output_facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(
            rowCount=int(result.get("rows_written") or 0),
            size=int(result.get("bytes_written") or 0),
        )
    output = OutputDataset(
        namespace=info.target.namespace,
        name=info.target.name,
        facets=facets,
        outputFacets=output_facets,
    )
    return OperatorLineage(inputs=inputs, outputs=[output])
