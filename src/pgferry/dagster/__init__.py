"""pgferry for Dagster: a resource, an asset factory, a translator and asset checks.

Typical use::

    import dagster as dg
    from pgferry.dagster import (
        PgferryResource, pgferry_asset, pgferry_checks, pgferry_source_specs,
    )

    orders = pgferry_asset(
        name="orders", source_table="public.orders", target_table="staging.orders",
        mode="upsert", key_columns="id",
    )
    defs = dg.Definitions(
        assets=[orders, *pgferry_source_specs(orders)],
        asset_checks=pgferry_checks(orders),
        resources={"pgferry": PgferryResource(source_dsn=dg.EnvVar("PGFERRY_SOURCE_DSN"),
                                              target_dsn=dg.EnvVar("PGFERRY_TARGET_DSN"))},
    )

This package translates configuration in and :class:`pgferry.RunResult` out; the core never
imports Dagster. See ``docs/dagster.md``.
"""

from pgferry.dagster._asset_info import (
    PgferryAssetInfo,
    pgferry_asset_info,
    pgferry_source_specs,
)
from pgferry.dagster.asset_decorator import DEFAULT_RETRY_POLICY, pgferry_asset
from pgferry.dagster.checks import pgferry_checks
from pgferry.dagster.metadata import result_metadata
from pgferry.dagster.resource import PgferryResource
from pgferry.dagster.translator import PgferryTranslator, PgferryTranslatorData

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "PgferryAssetInfo",
    "PgferryResource",
    "PgferryTranslator",
    "PgferryTranslatorData",
    "pgferry_asset",
    "pgferry_asset_info",
    "pgferry_checks",
    "pgferry_source_specs",
    "result_metadata",
]
