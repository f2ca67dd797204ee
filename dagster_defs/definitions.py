"""pgferry assets, checks and a schedule, over the tables of ``dagster_defs/seed.sql``.

The DSNs come from ``PGFERRY_SOURCE_DSN`` and ``PGFERRY_TARGET_DSN``, read when a run starts
(not at import), so ``dagster definitions validate -m dagster_defs`` needs no database.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import dagster as dg

import pgferry
from pgferry.dagster import PgferryResource, pgferry_asset, pgferry_checks, pgferry_source_specs

HERE = Path(__file__).parent
GROUP = "pgferry_examples"

# (a) A full copy through a transform. `replace` loads a shadow table and swaps it in, so a
# materialisation is all-or-nothing and repeating it is harmless. A failure that outlasts
# pgferry's own retries (a database away for a while) gets one more try 5 s later; past that,
# the run fails, and "Re-execute from failure" in the UI runs it again.
customers = pgferry_asset(
    name="customers",
    source_table="public.customers",
    target_table="customers",
    mode="replace",
    transform="dagster_defs.transforms:clean_customer",
    options={"target.columns": {"email_domain": "text"}},
    retry_policy=dg.RetryPolicy(max_retries=1, delay=5),
    group_name=GROUP,
)

# (b) Daily partitions of events by `occurred_at`: a partition deletes its day from the target
# and loads it again in one transaction, so re-running a day or backfilling a range is safe.
daily = dg.DailyPartitionsDefinition(start_date="2024-01-01", timezone="UTC")
events = pgferry_asset(
    name="events",
    source_table="public.events",
    target_table="events",
    key_columns="id",
    incremental_column="occurred_at",
    partitions_def=daily,
    group_name=GROUP,
)
events_daily = dg.define_asset_job("events_daily", selection=[events])
# Each night at 01:00 UTC, load the day that has just ended.
events_schedule = dg.build_schedule_from_partitioned_job(
    events_daily, hour_of_day=1, minute_of_hour=0
)

# (c) One big table in key ranges, planned once with
#   pgferry plan orders.yaml -n 4 --json > dagster_defs/orders_ranges.json
# and kept in the repository: the partition keys must not change between loads of the
# definitions, which re-planning against live data at import could not promise.
ORDER_RANGES = [
    pgferry.Partition(**p) for p in json.loads((HERE / "orders_ranges.json").read_text())
]
orders = pgferry_asset(
    name="orders",
    source_table="public.orders",
    target_table="orders",
    key_columns="id",
    partitions=ORDER_RANGES,
    group_name=GROUP,
)


# (d) A downstream asset that reads what pgferry loaded.
_ORDER_TOTALS = """
CREATE SCHEMA IF NOT EXISTS marts;
CREATE TABLE IF NOT EXISTS marts.order_totals (
    status text PRIMARY KEY, orders bigint NOT NULL, total numeric(14,2) NOT NULL);
DELETE FROM marts.order_totals;
INSERT INTO marts.order_totals
SELECT status, count(*), sum(total) FROM public.orders GROUP BY status;
"""


async def _order_totals(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(_ORDER_TOTALS)
        rows = await conn.fetch("SELECT * FROM marts.order_totals ORDER BY status")
        return [dict(r) for r in rows]
    finally:
        await conn.close()


@dg.asset(deps=[orders], group_name=GROUP, kinds={"postgres"})
def order_totals(pgferry: PgferryResource) -> dg.MaterializeResult[Any]:
    """Orders and their total per status, from the loaded ``orders`` table."""
    if not pgferry.target_dsn:
        raise dg.Failure("the pgferry resource has no target_dsn", allow_retries=False)
    rows = asyncio.run(_order_totals(pgferry.target_dsn))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),
            "dagster/table_name": "marts.order_totals",
            "orders": sum(r["orders"] for r in rows),
        }
    )


resources = {
    "pgferry": PgferryResource(
        source_dsn=dg.EnvVar("PGFERRY_SOURCE_DSN"),
        target_dsn=dg.EnvVar("PGFERRY_TARGET_DSN"),
    )
}

pgferry_assets = [customers, events, orders]

defs = dg.Definitions(
    assets=[*pgferry_assets, order_totals, *pgferry_source_specs(*pgferry_assets)],
    asset_checks=[check for asset in pgferry_assets for check in pgferry_checks(asset)],
    jobs=[events_daily],
    schedules=[events_schedule],
    resources=resources,
)
