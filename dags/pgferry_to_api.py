"""(f) Rows to an HTTP API: new and changed orders, every hour, to a REST endpoint.

Reads ``public.orders`` past the last committed ``updated_at`` position and sends the rows as
JSON arrays of 200 rows to the ``api_http`` connection's base URL + ``/orders``: its extras are
sent as headers (an API token, say: masked in logs and XCom), its login as basic
authentication. Every request carries an ``Idempotency-Key`` derived from its rows' keys, so a
retried task, or a cleared one, sends the same rows under the same keys. The ledger, the run
history and the rows the API refused (up to 10) live in the ``pg_target`` database.

Connections: ``pg_source``, ``pg_target`` (state) and ``api_http`` (type ``http``, from
apache-airflow-providers-http), e.g. ``AIRFLOW_CONN_API_HTTP='http://api.example.com?X-Api-Key=…'``.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag

from pgferry.airflow import PgferryOperator


@dag(
    dag_id="pgferry_to_api",
    schedule="@hourly",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["pgferry", "example", "http"],
)
def pgferry_to_api() -> None:
    PgferryOperator(
        task_id="send_orders",
        source_conn_id="pg_source",
        source_table="public.orders",
        key="id",
        incremental_column="updated_at",
        target_http_conn_id="api_http",
        endpoint="/orders",
        state_conn_id="pg_target",
        max_rejects=10,
        overrides={"target.http.rows_per_request": 200},
    )


pgferry_to_api()
