"""An HTTP API as a pgferry target: ``dagster dev -m dagster_defs.to_api``.

``customers_to_api`` sends ``public.customers`` (through the same cleaning transform as the
``customers`` asset) to ``PGFERRY_API_URL`` as JSON arrays of 100 rows, with an idempotency key
per request. The ledger, the run history and the rejects live in ``PGFERRY_STATE_DSN``; the
token goes in a header from ``PGFERRY_API_TOKEN``, masked in every log line and metadata entry.
Materialising it again sends the same requests under the same keys: an API that honours them
applies every row once.
"""

from __future__ import annotations

import os

import dagster as dg

from pgferry.dagster import PgferryResource, pgferry_asset

API_URL = os.environ.get("PGFERRY_API_URL", "http://127.0.0.1:8080/customers")

customers_to_api = pgferry_asset(
    name="customers_to_api",
    source_table="public.customers",
    key_columns="id",
    transform="dagster_defs.transforms:clean_customer",
    target_url=API_URL,
    options={"target.http.rows_per_request": 100, "max_rejects": 5},
    group_name="pgferry_http_example",
)

resources = {
    "pgferry": PgferryResource(
        source_dsn=dg.EnvVar("PGFERRY_SOURCE_DSN"),
        state_dsn=dg.EnvVar("PGFERRY_STATE_DSN"),
        http_headers={"Authorization": "Bearer " + os.environ.get("PGFERRY_API_TOKEN", "")},
    )
}

defs = dg.Definitions(assets=[customers_to_api], resources=resources)
