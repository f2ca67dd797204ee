"""(e) A daily snapshot appended to a history table.

Every day, all of ``public.customers`` is appended to ``public.customers_history`` with the
run's date in ``snapshot_date``: a full ``append``, the one mode whose repetition is not
idempotent. The operator's default ``run_key`` (DAG id, run id, task id, map index) is recorded
in ``pgferry.runs`` in the same transaction as the rows, so:

* a retry after a failure starts again from nothing (one transaction, nothing half-written);
* clearing the task after it succeeded, and running it again, finds the run key committed and
  ends ``skipped``: the day's snapshot is not appended twice;
* the next day's run has another run key and appends that day's snapshot.

Connections: ``pg_source`` and ``pg_target``.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag

from pgferry.airflow import PgferryOperator


@dag(
    dag_id="pgferry_daily_snapshot",
    schedule="@daily",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["pgferry", "example"],
)
def pgferry_daily_snapshot() -> None:
    PgferryOperator(
        task_id="snapshot_customers",
        source_conn_id="pg_source",
        target_conn_id="pg_target",
        source_query="SELECT $1::date AS snapshot_date, id, country, signed_up_at "
        "FROM public.customers",
        # The run's date. A run triggered from the UI, the REST API or `airflow dags trigger`
        # has no logical date (Airflow 3's default): `ds` is then undefined, so take the date
        # the run was due instead.
        source_params=["{{ (dag_run.logical_date or dag_run.run_after) | ds }}"],
        target_table="public.customers_history",
        mode="append",
        batch_size=500,
    )


pgferry_daily_snapshot()
