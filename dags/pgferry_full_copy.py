"""(a) A full copy with a row transform.

Copies ``public.customers`` to ``public.customers_clean`` through
``example_transforms:clean_customer`` (in a pool of two processes). Mode ``replace`` loads a
shadow table and swaps it in, so a rerun (or a cleared task) leaves one clean copy.

Connections: ``pg_source`` and ``pg_target`` (e.g. ``AIRFLOW_CONN_PG_SOURCE``).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag

from pgferry.airflow import PgferryOperator


@dag(
    dag_id="pgferry_full_copy",
    schedule="@daily",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["pgferry", "example"],
)
def pgferry_full_copy() -> None:
    PgferryOperator(
        task_id="copy_customers",
        source_conn_id="pg_source",
        target_conn_id="pg_target",
        source_table="public.customers",
        target_table="public.customers_clean",
        transform="example_transforms:clean_customer",
        mode="replace",
        workers=2,
        batch_size=500,
    )


pgferry_full_copy()
