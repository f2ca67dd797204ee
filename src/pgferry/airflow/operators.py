"""PgferryOperator: one pgferry job as an Airflow task.

The operator translates its arguments (or a job file, or a :class:`pgferry.Job`) and two
``postgres`` connections into a job, runs the engine, and returns the ``RunResult`` as a dict
(XCom ``return_value``). Failures the engine marks :class:`pgferry.Transient` raise
``AirflowException`` so that Airflow's ``retries`` apply; every retry, and every rerun of a
cleared task, resumes from the ledger in the target database. Other failures raise
``AirflowFailException``: retrying them would fail the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import Asset, AssetAlias, BaseOperator, Connection, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

import pgferry
from pgferry._dsn import mask_dsn
from pgferry.airflow._assets import alias_event_allowed, parse_assets
from pgferry.airflow._http import endpoint_asset, http_lineage, http_target_changes, shown_url
from pgferry.airflow._task import partition_data, query_param, run_key_of
from pgferry.airflow.hooks import PgferryHook, table_uri
from pgferry.engine.progress import ProgressLogger
from pgferry.errors import ConfigError, PgferryError, Transient
from pgferry.jobfile import apply_overrides
from pgferry.spec import Job, Partition

__all__ = ["DEFAULT_RUN_KEY", "PgferryOperator"]


def alias_name(dag_id: str | None, task_id: str) -> str:
    """The name of the AssetAlias of a task whose target is named only at run time."""
    return f"pgferry:{dag_id or '-'}.{task_id}"


DEFAULT_RUN_KEY = "{{ dag.dag_id }}/{{ run_id }}/{{ task.task_id }}/{{ ti.map_index }}"
"""The default ``run_key``: the same for every try and clear of one task instance."""


class PgferryOperator(BaseOperator):
    """Run a pgferry job: copy rows from one PostgreSQL database to another.

    Give either ``job`` (a :class:`pgferry.Job` or the path of a job file) or the keywords
    that describe one; keywords override what the job says. The DSNs come from the two
    ``postgres`` connections.

    Args:
        job: A :class:`pgferry.Job`, or the path of a YAML/TOML job file (templated).
        source_conn_id: Connection of the source database.
        target_conn_id: Connection of the target database.
        source_table: Table to read (templated); or
        source_query: a query to read (templated), with ``$1``, ``$2``… placeholders for
        source_params: its parameters (templated; always bound, never formatted into the SQL).
        target_table: Table to write (templated).
        transform: ``package.module:function`` applied to every row (or batch).
        mode: ``append``, ``upsert`` or ``replace``.
        key: Target key columns (upsert key; also orders resumable and partitioned reads).
        incremental_column: Read only rows whose value in this column is past the last
            committed position (ledger-based, exactly once).
        batch_size: Rows per batch (one batch is one target transaction).
        workers: Transform processes (``0``: inline; ``"auto"``: measure and decide).
        max_rejects: Rows that may be set aside in ``pgferry.rejects`` before the run fails.
        partition: A slice of the source (templated): a :class:`pgferry.Partition` or a mapping
            with ``column``, ``lower``, ``upper`` and optionally ``name`` and ``replace``. Map
            over it with ``.partial(...).expand(partition=...)``.
        overrides: Any other job fields, as dotted keys (``{"max_retries": 0,
            "target.columns": {...}}``) (templated).
        job_name: The job's name in the ledger and run history. Default: the job's own name
            when ``job`` is given, else ``<dag_id>.<task_id>``.
        run_key: This task's identity across tries and clears (templated). Default: the DAG
            id, run id, task id and map index, so that clearing a task whose full ``append``
            succeeded and running it again is skipped instead of appending the rows twice
            (see :attr:`pgferry.Job.run_key`). ``None``: no run key (each run appends).
        progress_interval: Seconds between progress lines in the task log.
        target_http_conn_id, endpoint, state_conn_id: An HTTP target (``docs/http.md``): an
            ``http`` connection, a path (templated), the ``postgres`` connection of its state.
        **kwargs: Passed to ``BaseOperator`` (``retries``, ``outlets``…).
    """

    template_fields: Sequence[str] = (
        "job",
        "source_table",
        "source_query",
        "source_params",
        "target_table",
        "partition",
        "overrides",
        "run_key",
        "endpoint",
    )
    template_fields_renderers = {
        "source_query": "sql",
        "source_params": "json",
        "partition": "json",
        "overrides": "json",
    }
    ui_color = "#cfe2f3"

    def __init__(
        self,
        *,
        job: Job | str | os.PathLike[str] | None = None,
        source_conn_id: str | None = None,
        target_conn_id: str | None = None,
        source_table: str | None = None,
        source_query: str | None = None,
        source_params: Sequence[Any] | None = None,
        target_table: str | None = None,
        transform: str | None = None,
        mode: str | None = None,
        key: str | Sequence[str] | None = None,
        incremental_column: str | None = None,
        batch_size: int | None = None,
        workers: int | str | None = None,
        max_rejects: float | None = None,
        partition: Partition | Mapping[str, Any] | str | None = None,
        overrides: Mapping[str, Any] | None = None,
        job_name: str | None = None,
        run_key: str | None = DEFAULT_RUN_KEY,
        progress_interval: float = 30.0,
        target_http_conn_id: str | None = None,
        endpoint: str | None = None,
        state_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if source_table is not None and source_query is not None:
            raise ValueError(f"task {self.task_id!r}: give source_table or source_query, not both")
        destination = target_table or target_http_conn_id or endpoint
        if job is None and ((source_table is None and source_query is None) or not destination):
            raise ValueError(f"task {self.task_id!r}: give a job, or a source and a target")
        self.target_http_conn_id, self.endpoint = target_http_conn_id, endpoint
        self.state_conn_id = state_conn_id
        self.job = os.fspath(job) if isinstance(job, os.PathLike) else job
        self.source_conn_id = source_conn_id
        self.target_conn_id = target_conn_id
        self.source_table = source_table
        self.source_query = source_query
        self.source_params = list(source_params) if source_params is not None else None
        self.target_table = target_table
        self.transform = transform
        self.mode = mode
        self.key = key
        self.incremental_column = incremental_column
        self.batch_size = batch_size
        self.workers = workers
        self.max_rejects = max_rejects
        self.partition = partition
        self.overrides = dict(overrides or {})
        self.job_name = job_name
        self.run_key = run_key
        self.progress_interval = progress_interval
        if partition is not None and self.map_index_template is None:
            # Mapped over partitions, each task shows as its range in the UI.
            self.map_index_template = "{{ task.partition_name }}"
        dag = self.get_dag()
        self.asset_alias_name = alias_name(dag.dag_id if dag else None, self.task_id)
        # A mapped task is built again for each map index when it runs, with the inlets and
        # outlets that partial() declared when the DAG was parsed (this __init__ did not run
        # then): Assets first declared now would be unknown to Airflow, and their events dropped.
        mapped = bool(getattr(self, "_BaseOperator__from_mapped", False))
        if not mapped:
            inlets, outlets = parse_assets(vars(self), self.asset_alias_name)
            if not self.inlets:
                self.inlets = inlets
            if not self.outlets:
                self.outlets = outlets
        elif not self.outlets:
            self.outlets = [AssetAlias(name=self.asset_alias_name)]
        self._job: Job | None = None
        self._result: dict[str, Any] | None = None

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Like ``BaseOperator.partial``, and declares the mapped task's Assets at parse time.

        Every map index then records its event on the target's Asset (known to Airflow since
        the DAG was parsed), instead of racing with the others to create it through the alias.
        """
        given_inlets, given_outlets = "inlets" in kwargs, "outlets" in kwargs
        op_partial = super().partial(**kwargs)
        args = op_partial.kwargs
        dag = args.get("dag")
        name = alias_name(dag.dag_id if dag is not None else None, args["task_id"])
        inlets, outlets = parse_assets(args, name)
        if not given_inlets:
            args["inlets"] = inlets
        if not given_outlets:
            args["outlets"] = outlets
        return op_partial

    @property
    def partition_name(self) -> str:
        """The partition's name (after rendering), or ``""``."""
        try:
            data = partition_data(self.partition)
        except ConfigError:
            return ""
        return str(data.get("name") or "") if data else ""

    @cached_property
    def source_hook(self) -> PgferryHook | None:
        """Hook of the source connection (``None`` when the job file holds the DSN)."""
        return PgferryHook(self.source_conn_id) if self.source_conn_id else None

    @cached_property
    def target_hook(self) -> PgferryHook | None:
        """Hook of the target connection (``None`` when the job file holds the DSN)."""
        return PgferryHook(self.target_conn_id) if self.target_conn_id else None

    # --- Building the job ---------------------------------------------------------------------

    def _changes(self) -> dict[str, Any]:
        """The operator's arguments as dotted job keys, overriding the job's own values."""
        changes: dict[str, Any] = {}
        if self.source_table is not None:
            changes |= {"source.table": self.source_table, "source.query": None}
        if self.source_query is not None:
            changes |= {"source.query": self.source_query, "source.table": None}
        if self.source_params is not None:
            changes["source.params"] = [query_param(v) for v in self.source_params]
        simple = {
            "target.table": self.target_table,
            "transform": self.transform,
            "target.mode": self.mode,
            "target.key": self.key,
            "incremental.column": self.incremental_column,
            "batch_size": self.batch_size,
            "workers": self.workers,
            "max_rejects": self.max_rejects,
            "name": self.job_name,
            "run_key": self.run_key,
        }
        changes |= {k: v for k, v in simple.items() if v is not None}
        partition = partition_data(self.partition)
        if partition is not None:
            changes["partition"] = partition
        changes |= self.overrides
        # Last, so that no override can point a connection-backed job elsewhere.
        if self.source_hook is not None:
            changes["source.dsn"] = self.source_hook.dsn
        if self.target_hook is not None:
            changes["target.dsn"] = self.target_hook.dsn
        changes |= http_target_changes(self.target_http_conn_id, self.endpoint, self.state_conn_id)
        return changes

    def build_job(self) -> Job:
        """The job this task runs (after template rendering; fetches the connections).

        Raises:
            ConfigError: The arguments, job file or connections do not make a valid job.
        """
        changes = self._changes()
        if isinstance(self.job, Job):
            return Job.from_dict(apply_overrides(self.job.model_dump(), changes), "task arguments")
        if isinstance(self.job, str) and self.job:
            return pgferry.load_job(self.job, changes)
        data: dict[str, Any] = {"name": f"{self.dag_id}.{self.task_id}"}
        return Job.from_dict(apply_overrides(data, changes), "task arguments")

    # --- Running ------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        """Run the job; return its ``RunResult`` as a dict (XCom ``return_value``)."""
        if self.run_key == DEFAULT_RUN_KEY:
            # Not rendered (execute() called directly): a literal template would be one key
            # for every run, and would skip them all.
            self.run_key = run_key_of(context)
        try:
            job = self.build_job()
        except ConfigError as exc:
            raise AirflowFailException(f"pgferry: invalid job: {exc}") from exc
        self._job = job
        if job.partition is not None and context.get("map_index_template") is None:
            # A mapped task's context was made before this instance existed: name it here.
            context["map_index_template"] = "{{ task.partition_name }}"
        if job.repeat_duplicates and job.run_key is None:
            self.log.warning(
                "pgferry job %r appends without incremental_column, partition replace or "
                "run_key: a retry after a failure resumes exactly, but running this task again "
                "after it succeeded (clearing it) appends the rows again",
                job.name,
            )
        self.log.info(
            "pgferry job %r: %s -> %s (mode %s%s)",
            job.name,
            mask_dsn(job.source.dsn),
            shown_url(job.target.http.url) if job.target.http else mask_dsn(job.target.dsn),
            job.target.mode,
            f", partition {job.partition.name}" if job.partition else "",
        )
        progress = ProgressLogger(self.log, job.name, self.progress_interval)
        try:
            result = self._run(job, progress)
        except PgferryError as exc:
            failed = exc.result
            if failed is not None:
                self.log.error(
                    "pgferry job %r failed after %d attempt(s): %d rows read, %d written "
                    "(committed batches stay committed)",
                    job.name,
                    failed.attempts,
                    failed.rows_read,
                    failed.rows_written,
                )
            if isinstance(exc, Transient):
                raise AirflowException(
                    f"pgferry job {job.name!r} failed with a transient error; a retry resumes "
                    f"from the last committed batch: {exc}"
                ) from exc
            raise AirflowFailException(f"pgferry job {job.name!r} failed: {exc}") from exc
        summary = result.to_dict()
        self._result = summary
        if result.status == "skipped":
            self.log.info(
                "pgferry job %r: nothing done; run key %r was committed by pgferry run %s",
                job.name,
                result.run_key,
                result.committed_by,
            )
            self._emit_asset_event(context, job, summary)
            return summary
        self.log.info(
            "pgferry job %r: %d rows read, %d written, %d rejected in %.1f s (%.0f rows/s, "
            "%s path, %d workers, %d attempt(s))",
            job.name,
            result.rows_read,
            result.rows_written,
            result.rows_rejected,
            result.duration_s,
            result.rows_per_second,
            result.path,
            result.workers,
            result.attempts,
        )
        self._emit_asset_event(context, job, summary)
        return summary

    @staticmethod
    def _run(job: Job, on_progress: ProgressLogger) -> pgferry.RunResult:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return pgferry.run(job, on_progress=on_progress)
        # An event loop already runs in this thread: give the engine a thread of its own.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(pgferry.run, job, on_progress=on_progress).result()

    # --- Assets -------------------------------------------------------------------------------

    def _connection_of(self, hook: PgferryHook | None, dsn: str | None) -> Connection | None:
        if hook is not None:
            return hook.connection
        if dsn and "://" in dsn:
            try:
                return Connection.from_uri(dsn, conn_id="pgferry")
            except Exception:
                return None
        return None

    def _asset_uri(self, side: str, job: Job) -> str | None:
        if side == "source":
            conn = self._connection_of(self.source_hook, job.source.dsn)
            table = job.source.table
            database = self.source_hook.database if self.source_hook else None
        else:
            if job.target.http is not None:
                return endpoint_asset(job.target.http.url).uri
            conn = self._connection_of(self.target_hook, job.target.dsn)
            table = job.target.table
            database = self.target_hook.database if self.target_hook else None
        if conn is None or table is None:
            return None
        return table_uri(conn, table, database)

    def _emit_asset_event(self, context: Context, job: Job, summary: Mapping[str, Any]) -> None:
        """Describe the target's Asset event: on a declared outlet, or through the alias.

        Airflow records an event for every declared outlet Asset of a successful task; pgferry
        adds its ``extra``. Through the alias, pgferry adds the event itself, except for a
        ``skipped`` run, which did not change the target.
        """
        target = self._asset_uri("target", job)
        if target is None:
            self.log.warning("pgferry: no Asset event: the target is not a postgres:// URL")
            return
        extra: dict[str, Any] = {
            "job": summary["job"],
            "run_id": summary["run_id"],
            "status": summary["status"],
            "partition": summary["partition"],
            "mode": summary["mode"],
            "rows_written": summary["rows_written"],
            "watermark_after": summary["watermark_after"],
            "source": self._asset_uri("source", job) or "query",
        }
        events = context["outlet_events"]
        declared = [o for o in self.outlets if isinstance(o, Asset) and o.uri == target]
        for outlet in declared:
            events[outlet].extra.update(extra)
        if declared or summary["status"] == "skipped":
            return
        ti = context.get("ti")
        map_index = getattr(ti, "map_index", None) if ti is not None else None
        for outlet in self.outlets:
            if (
                isinstance(outlet, AssetAlias)
                and outlet.name == self.asset_alias_name
                and alias_event_allowed(map_index, outlet.name, target, warn=self.log.warning)
            ):
                events[outlet].add(Asset(uri=target), extra=extra)

    # --- OpenLineage --------------------------------------------------------------------------

    def get_openlineage_facets_on_start(self) -> Any:
        """The input and output datasets, named from the job alone (no database is read)."""
        return self._lineage_or_none(None, introspect=False)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Input and output datasets with schemas, column lineage and output statistics.

        Returns ``None`` when the OpenLineage provider is not installed. Never raises: lineage
        must not fail the task.
        """
        return self._lineage_or_none(self._result, introspect=True)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """Datasets and schemas of a failed run (no output statistics)."""
        return self._lineage_or_none(None, introspect=True)

    def _lineage_or_none(self, result: Mapping[str, Any] | None, *, introspect: bool) -> Any:
        try:
            from airflow.providers.openlineage.extractors import OperatorLineage  # noqa: F401
        except ImportError:
            return None
        try:
            return self._lineage(result, introspect=introspect)
        except Exception as exc:
            self.log.warning("pgferry: no OpenLineage facets: %s", exc)
            return None

    def _lineage(self, result: Mapping[str, Any] | None, *, introspect: bool) -> Any:
        from pgferry.airflow import lineage

        job = self._job or self.build_job()
        source_conn = self._connection_of(self.source_hook, job.source.dsn)
        if job.target.http is not None and source_conn is not None:
            hook = self.source_hook or _UriHook(source_conn)
            return http_lineage(job, hook, result, introspect=introspect)
        target_conn = self._connection_of(self.target_hook, job.target.dsn)
        if source_conn is None or target_conn is None:
            return None
        source_hook = self.source_hook or _UriHook(source_conn)
        target_hook = self.target_hook or _UriHook(target_conn)
        table = job.source.table
        source = lineage.dataset_of(source_hook, table) if table is not None else None
        target = lineage.dataset_of(target_hook, job.target.pg_table)
        try:
            info = lineage.gather(
                job,
                source=source,
                target=target,
                namespace=source_hook.openlineage_namespace,
                database=source_hook.database_name,
                introspect=introspect,
            )
        except Exception as exc:
            # Datasets without schemas are better than no lineage at all.
            self.log.warning("pgferry: lineage without schemas (introspection failed: %s)", exc)
            info = lineage.gather(
                job,
                source=source,
                target=target,
                namespace=source_hook.openlineage_namespace,
                database=source_hook.database_name,
                introspect=False,
            )
        return lineage.operator_lineage(info, result)


class _UriHook(PgferryHook):
    """A hook over a connection built from a DSN in a job file (no Airflow connection)."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn.conn_id)
        self.__dict__["connection"] = conn
