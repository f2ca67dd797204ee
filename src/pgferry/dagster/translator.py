"""How a pgferry job maps onto Dagster asset specs: override :class:`PgferryTranslator`."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Literal

import dagster as dg

from pgferry.httpspec import mask_url
from pgferry.spec import Job
from pgferry.sql import TableName

__all__ = ["PgferryTranslator", "PgferryTranslatorData"]


@dataclass(frozen=True)
class PgferryTranslatorData:
    """What the translator gets to describe one side of a transfer.

    Attributes:
        job: The job (its DSNs may be unset: the resource supplies them at run time).
        side: ``target`` for the asset pgferry materialises, ``source`` for the upstream
            external asset that stands for the source table.
    """

    job: Job
    side: Literal["source", "target"]

    @property
    def table(self) -> TableName | None:
        """The table of this side (``None`` for a source query)."""
        return self.job.target.table if self.side == "target" else self.job.source.table


def _endpoint_spec(translator: PgferryTranslator, job: Job) -> dg.AssetSpec:
    """An HTTP target: ``["http", host, *path]``, with the endpoint (masked) in metadata."""
    http = job.target.http
    assert http is not None
    parts = urllib.parse.urlsplit(http.url)
    path = [re.sub(r"\W", "_", p) for p in parts.path.split("/") if p]
    deps: list[dg.AssetKey] = []
    if job.source.table is not None:
        deps.append(translator.get_asset_spec(PgferryTranslatorData(job, "source")).key)
    source = str(job.source.table) if job.source.table is not None else "a query"
    shown = mask_url(http.url)
    return dg.AssetSpec(
        key=dg.AssetKey(["http", re.sub(r"\W", "_", parts.hostname or "endpoint"), *path]),
        deps=deps,
        description=f"Rows of {source} sent by pgferry to {http.method} {shown}.",
        metadata={"pgferry/endpoint": str(shown)},
        kinds={"http", "pgferry"},
    )


def _parts(table: TableName) -> list[str]:
    return [table.schema, table.name] if table.schema else [table.name]


def _source_parts(table: TableName) -> list[str]:
    # Dagster's asset graph labels a node with the last part of its key only: the source
    # table's node must not read "customers" like its target's.
    return [*_parts(table)[:-1], f"{table.name}_source"]


class PgferryTranslator:
    """Maps a pgferry job to the :class:`dagster.AssetSpec` of its target and of its source.

    Subclass it and override :meth:`get_asset_spec` to choose other keys, groups, owners or
    tags; call ``super().get_asset_spec(data)`` and ``replace_attributes`` to change a part::

        class MyTranslator(PgferryTranslator):
            def get_asset_spec(self, data: PgferryTranslatorData) -> dg.AssetSpec:
                spec = super().get_asset_spec(data)
                if data.side == "source":
                    return spec.replace_attributes(key=["erp", data.job.source.table.name])
                return spec.replace_attributes(owners=["team:data"])
    """

    def get_asset_spec(self, data: PgferryTranslatorData) -> dg.AssetSpec:
        """The spec of one side of the transfer.

        Defaults: the target's key is its table name (``["staging", "orders"]``) and it
        depends on the source; a source table's key is ``["source", schema,
        "<table>_source"]`` (``source/public/orders_source``), so that the asset graph, which
        labels a node with the key's last part, tells it from the target. Both
        carry ``dagster/table_name`` and the ``postgres`` kind. A source query has no
        source spec by default: there is no single table to point at (pass ``deps=`` to the
        factory instead); this method is then called for the target side only.
        """
        job = data.job
        table = data.table
        if data.side == "target" and job.target.http is not None:
            return _endpoint_spec(self, job)
        if table is None:
            raise ValueError("a source query has no table to describe as an asset")
        if data.side == "source":
            return dg.AssetSpec(
                key=dg.AssetKey(["source", *_source_parts(table)]),
                description=f"PostgreSQL table {table}, read by pgferry job {job.name!r}.",
                metadata={"dagster/table_name": str(table)},
                kinds={"postgres"},
            )
        deps: list[dg.AssetKey] = []
        if job.source.table is not None:
            deps.append(self.get_asset_spec(PgferryTranslatorData(job, "source")).key)
        source = str(job.source.table) if job.source.table is not None else "a query"
        transform = job.describe()["transform"]
        via = f" through {transform}" if transform else ""
        return dg.AssetSpec(
            key=dg.AssetKey(_parts(table)),
            deps=deps,
            description=(f"{table} loaded by pgferry from {source}{via} (mode {job.target.mode})."),
            metadata={"dagster/table_name": str(table)},
            kinds={"postgres", "pgferry"},
        )
