"""(b) An hourly incremental upsert.

Every hour, rows of ``public.orders`` whose ``updated_at`` moved past the position committed by
the previous run, up to the end of the run's data interval, are upserted into
``public.orders_mirror`` by ``id``, with a gross amount added by
``example_transforms:with_gross_amount``. The position (the watermark) lives in the ledger of
the target database and is committed with each batch, so:

* a retry continues after the last committed batch, with no duplicate and no gap;
* rerunning an hour (clearing the task) finds nothing new and changes nothing;
* a row committed after its hour's run, stamped past the watermark, is read by the next
  run, where a pure time window (``updated_at`` within the data interval) would miss it
  (``incremental.lookback`` also re-reads a margin before the watermark);
* the data interval's end is a bound parameter of the source query: a run never reads past
  the end of its own interval, even when it runs late (a run triggered by hand, which has no
  data interval, reads up to the time it was triggered).

Here Airflow owns the retries (``max_retries: 0`` turns off the engine's own), so each attempt
shows in the UI.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag

from pgferry.airflow import PgferryOperator


@dag(
    dag_id="pgferry_hourly_incremental",
    schedule="@hourly",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=2)},
    tags=["pgferry", "example"],
)
def pgferry_hourly_incremental() -> None:
    PgferryOperator(
        task_id="upsert_orders",
        source_conn_id="pg_source",
        target_conn_id="pg_target",
        # The data interval bounds each run: a late or backfilled run stops at its own end.
        # Parameters are bound, never formatted into the SQL. A run triggered with no logical
        # date (from the UI or the REST API) has no data interval: it reads up to the moment it
        # was due (`run_after`).
        source_query="SELECT * FROM public.orders WHERE updated_at < $1",
        source_params=["{{ dag_run.data_interval_end or dag_run.run_after }}"],
        target_table="public.orders_mirror",
        mode="upsert",
        key="id",
        incremental_column="updated_at",
        transform="example_transforms:with_gross_amount",
        batch_size=200,
        overrides={"max_retries": 0},
    )


pgferry_hourly_incremental()
