"""(c) A partitioned parallel copy with dynamic task mapping.

``plan_ranges`` splits ``public.events`` into ranges of its key (four by default; trigger with
``{"ranges": 8}`` for eight); ``copy_range`` is mapped
over them, one task per range, each with its own ledger entry, so every range runs, retries and
reruns on its own (in parallel on Celery or Kubernetes workers). Each range is loaded with
``replace: true``: its slice of the target is deleted and reloaded in one transaction, so
rerunning a range never duplicates rows.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param, dag, task

from pgferry.airflow import PgferryHook, PgferryOperator

SOURCE_TABLE = "public.events"
TARGET_TABLE = "public.events_copy"


@task
def plan_ranges(n: int | str = 4) -> list[dict[str, Any]]:
    """The key ranges, as XCom-friendly mappings."""
    import pgferry

    n = int(n)  # rendered from the run's params
    job = pgferry.Job(
        source={"dsn": PgferryHook("pg_source").dsn, "table": SOURCE_TABLE, "key": "id"},
        target={"table": TARGET_TABLE},
    )
    return [{**p.model_dump(), "replace": True} for p in pgferry.plan_partitions(job, n)]


@dag(
    dag_id="pgferry_partitioned_copy",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    params={"ranges": Param(4, type="integer", minimum=1, maximum=256, description="key ranges")},
    tags=["pgferry", "example"],
)
def pgferry_partitioned_copy() -> None:
    PgferryOperator.partial(
        task_id="copy_range",
        source_conn_id="pg_source",
        target_conn_id="pg_target",
        source_table=SOURCE_TABLE,
        target_table=TARGET_TABLE,
        key="id",
        retries=2,
    ).expand(partition=plan_ranges("{{ params.ranges }}"))


pgferry_partitioned_copy()
