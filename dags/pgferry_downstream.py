"""(d) A downstream DAG scheduled on the target Asset of (a).

``PgferryOperator`` emits an Asset event for its target table, ``postgres://host:port/database/
schema/table`` (the postgres provider's URI form), each time it succeeds; this DAG runs after
each one. ``table_asset`` builds the same URI from the target connection; in production, write
the URI out (``Asset("postgres://dwh.internal:5432/dwh/public/customers_clean")``).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import dag, task

from pgferry.airflow import PgferryHook, table_asset

CUSTOMERS_CLEAN = table_asset(
    os.environ.get("AIRFLOW_CONN_PG_TARGET", "postgres://localhost:5432/warehouse"),
    "public.customers_clean",
)


@task(inlets=[CUSTOMERS_CLEAN])
def report(*, inlet_events: Any = None) -> dict[str, Any]:
    """What the last load wrote, from its Asset event and from the table itself."""
    import asyncio

    import asyncpg

    events = inlet_events[CUSTOMERS_CLEAN]
    last = events[-1].extra if events else {}

    async def count() -> int:
        conn = await asyncpg.connect(PgferryHook("pg_target").dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM public.customers_clean"))
        finally:
            await conn.close()

    return {
        "rows_written": last.get("rows_written"),
        "pgferry_run_id": last.get("run_id"),
        "rows_in_table": asyncio.run(count()),
    }


@dag(
    dag_id="pgferry_downstream",
    schedule=[CUSTOMERS_CLEAN],
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["pgferry", "example"],
)
def pgferry_downstream() -> None:
    report()


pgferry_downstream()
