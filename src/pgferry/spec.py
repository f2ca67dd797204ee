"""The job spec: a validated, serialisable description of one transfer.

The same :class:`Job` is built from Python, from a YAML or TOML file (:func:`load_job`, in
:mod:`pgferry.jobfile`), from CLI options, from Airflow operator arguments and from Dagster
config. Secrets never appear in its ``repr``: DSN passwords are masked by :func:`mask_dsn`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pgferry._dsn import mask_dsn
from pgferry.errors import ConfigError, JobValidationError
from pgferry.fields import KeyField, Seconds, TableField
from pgferry.httpspec import HttpTarget, check_http_job
from pgferry.sql import TableName, check_type_name

__all__ = [
    "Incremental",
    "Job",
    "Partition",
    "Source",
    "State",
    "Target",
    "mask_dsn",
]

_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")

Mode = Literal["append", "replace", "upsert"]
_INTERVAL = re.compile(r"[0-9A-Za-z .:+-]+")


SchemaChanges = Literal["evolve", "freeze", "discard"]


def _error_lines(exc: ValidationError) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, JobValidationError):
            # A nested model's own error: prefix its keys with where it sits.
            for key, text in cause.problems:
                lines.append((".".join(p for p in (loc, key) if p), text))
            continue
        if err["type"] == "extra_forbidden":
            text = "unknown key"
        elif err["type"] == "missing":
            text = "required key is missing"
        elif isinstance(cause, ConfigError):
            text = cause.message
        else:
            text = err["msg"].removeprefix("Value error, ")
        lines.append((loc, text))
    return lines


def _validation_error(problems: list[tuple[str, str]], where: str) -> JobValidationError:
    text = "\n  ".join(f"{key or '(top level)'}: {problem}" for key, problem in problems)
    return JobValidationError(f"invalid {where}:\n  {text}", problems=problems)


class _Model(BaseModel):
    # Inputs stay out of error messages: they may hold DSNs with passwords.
    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, hide_input_in_errors=True
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            # `from None`: the pydantic error adds nothing the lines do not say.
            raise _validation_error(_error_lines(exc), type(self).__name__.lower()) from None

    def __repr_args__(self) -> Any:
        # Secrets never reach a repr, a log line or an error message.
        for name, value in super().__repr_args__():
            yield name, (mask_dsn(value) if name == "dsn" else value)


class Source(_Model):
    """Where rows come from.

    Attributes:
        dsn: PostgreSQL connection string (URL or libpq keywords). Optional when an
            orchestrator supplies it.
        table: A table to read whole; or
        query: a query whose result is read.
        key: Columns that identify a row (used for ordering and partitioning). Default for
            a table: its primary key, else its smallest unique index on NOT NULL columns.
        params: Values for ``$1``, ``$2``… in ``query``, always bound, never formatted in.
            Text is converted to the parameter's type (``'2024-01-01'`` for a
            ``timestamptz``), so templated values from an orchestrator work as they are.
    """

    dsn: str | None = None
    table: TableField | None = None
    query: str | None = None
    key: KeyField = None
    params: list[str | int | float | bool | None] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_of_table_or_query(self) -> Source:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if self.query is not None:
            # A trailing semicolon would break the wrapping in COPY (…) and sub-selects.
            query = self.query.strip().rstrip(";").strip()
            if not query:
                raise ValueError("'query' is empty")
            object.__setattr__(self, "query", query)
        if self.params and self.query is None:
            raise ValueError("'params' go with a 'query'")
        return self


class Target(_Model):
    """Where rows go.

    Attributes:
        dsn: PostgreSQL connection string. Optional when an orchestrator supplies it.
        table: The target table; created when missing.
        mode: ``append`` adds rows; ``upsert`` inserts or updates rows by ``key``;
            ``replace`` loads a shadow table and swaps it in atomically.
        key: Columns that identify a row in the target (``upsert``; default: the source
            table's primary key, else its smallest unique NOT NULL index). When pgferry
            creates the table it makes them its PRIMARY KEY if they are the source's, else a
            unique index.
        columns: Types of the columns the transform creates (name to PostgreSQL type), used
            when pgferry creates the table.
        sync_deletes: With a full (non-incremental) ``upsert``, delete target rows whose key
            no longer exists in the source, after the load.
        http: Send the rows to an HTTP endpoint instead (see
            :class:`~pgferry.httpspec.HttpTarget`); then ``table``, ``dsn`` and ``mode`` are
            not used and the job's state goes to ``state.dsn``.
        schema_changes: What to do when the rows no longer fit an existing target
            (``docs/schema-evolution.md``): ``evolve`` adds new columns, widens types in
            place and drops ``NOT NULL`` from columns the source no longer has; ``freeze``
            fails listing every difference; ``discard`` loads what fits and leaves the
            target as it is.
        lock_timeout: How long one schema change waits for the table's lock before it gives
            way to the queries behind it and retries (seconds, or text: ``"2s"``).
        allow_rewrite: Let ``evolve`` change a column type that needs the table rewritten
            (``integer`` to ``bigint``…): a copy is built and swapped in.
        terminate_blockers_after: Terminate the sessions that keep a schema change from its
            lock once it has been blocked this long (``"5 minutes"``); default never.
    """

    dsn: str | None = None
    table: TableField | None = None
    mode: Mode = "append"
    key: KeyField = None
    columns: dict[str, str] = Field(default_factory=dict)
    sync_deletes: bool = False
    schema_changes: SchemaChanges = "evolve"
    lock_timeout: Seconds = 2.0
    allow_rewrite: bool = False
    terminate_blockers_after: Seconds | None = None

    http: HttpTarget | None = None

    @model_validator(mode="after")
    def _table_or_http(self) -> Target:
        def problem(key: str, text: str) -> JobValidationError:
            return JobValidationError(text, problems=[(key, text)])

        if self.http is None:
            if self.table is None:
                raise problem(
                    "table", "required key is missing (or give 'http' to send rows to an endpoint)"
                )
            return self
        if "mode" in self.model_fields_set:
            raise problem(
                "mode",
                "'mode' is not used for HTTP targets (every row is sent once per run, under "
                "an idempotency key): remove it",
            )
        for name in ("table", "dsn", "sync_deletes"):
            if name in self.model_fields_set:
                raise problem(
                    name,
                    f"{name!r} is for PostgreSQL targets, not HTTP ones (an HTTP target's "
                    "ledger, runs and rejects go to state.dsn)",
                )
        return self

    @property
    def pg_table(self) -> TableName:
        """The target table of a PostgreSQL target."""
        if self.table is None:
            raise ConfigError("this job's target is an HTTP endpoint, not a table")
        return self.table

    @field_validator("columns")
    @classmethod
    def _valid_types(cls, value: dict[str, str]) -> dict[str, str]:
        for name, type_name in value.items():
            try:
                check_type_name(type_name)
            except ConfigError as exc:
                raise ValueError(f"column {name!r}: {exc.message}") from None
        return value


class State(_Model):
    """Where pgferry keeps a job's ledger, runs and rejects when the target is not PostgreSQL.

    Attributes:
        dsn: A PostgreSQL database (never the source unless you name it here).
    """

    dsn: str | None = None


class Incremental(_Model):
    """Read only what is new since the last run.

    Rows are read in the order ``(column, key…)`` strictly after the position committed by
    the previous batch, so rows sharing a ``column`` value are neither skipped nor read twice.
    The position is committed in the same transaction as the batch's rows.

    Attributes:
        column: The column that grows (``updated_at``, a sequence id). Rows where it is NULL
            are never read.
        key: Tie-breaking columns; default the source key, else the target key.
        initial: Only rows with ``column >= initial`` are read on the first run.
        lookback: An interval (``"1 hour"``) re-read before the position on every run, to
            catch rows whose transactions committed late. Needs ``upsert``.
    """

    column: str
    key: KeyField = None
    initial: str | int | float | None = None
    lookback: str | None = None

    @field_validator("lookback")
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        if value is not None and not _INTERVAL.fullmatch(value):
            raise ValueError(f"{value!r} is not an interval such as '1 hour' or '00:15:00'")
        return value


class Partition(_Model):
    """One slice of the source, with its own ledger entry: ``lower <= column < upper``.

    Attributes:
        name: Identifies the slice in the ledger and the run history.
        column: The source column that is sliced (and, for ``replace``, the target column).
        lower: Inclusive lower bound (``None``: unbounded; that range also holds the rows
            where ``column`` is NULL), as text or a number.
        upper: Exclusive upper bound (``None``: unbounded).
        replace: Delete the slice from the target and load it again in one transaction, so
            that reloading a slice (a Dagster time window, say) is idempotent.
    """

    name: str = Field(min_length=1)
    column: str
    lower: str | int | float | None = None
    upper: str | int | float | None = None
    replace: bool = False


class Job(_Model):
    """One transfer: source, optional transform, target and tuning knobs.

    Attributes:
        name: Identifies the job in logs, errors and run history; defaults to the target table.
        source: See :class:`Source`.
        target: See :class:`Target`.
        transform: ``package.module:function`` or, from Python, a callable. A row transform
            takes one row (a read-only mapping) and returns a mapping, ``None`` to drop the row,
            or a list of mappings to fan out. A function marked with
            :func:`pgferry.batch_transform` takes and returns a list of rows.
        batch_size: Rows per batch; one batch is one transaction on the target.
        batch_bytes: With an Arrow or Polars transform, the size of a batch as the reader
            gets it (bytes of the source's binary COPY data; ADBC's batch size hint), unless
            ``batch_size`` is set too (then batches are cut to that many rows as well). The
            columnar lane's memory is about ``queue_depth * batch_bytes`` times a small
            factor; the rows lane counts rows (``batch_size``) instead.
        queue_depth: Batches buffered between stages; memory is bounded by
            ``queue_depth * batch_size`` rows (``batch_bytes`` on the columnar lane) per queue.
        workers: ``0`` runs the transform inline, ``N`` in a pool of N processes, ``"auto"``
            measures the first batch and decides (between inline, a pool and, with
            ``pipelines: auto``, parallel pipelines).
        pipelines: ``N`` runs the rows through N complete reader → transform → loader
            pipelines in separate processes, over disjoint ranges of the key, all reading one
            snapshot of the source; ``1`` never does; ``"auto"`` does when the job allows it
            and the first batch measures it worthwhile (only while ``workers`` is ``"auto"``).
            See ``docs/performance.md`` for which jobs can.
        connect_timeout: Seconds to wait for a connection before failing.
        statement_timeout: Seconds a single statement may run (``None``: server default).
        lock_timeout: Seconds the ``replace`` swap waits for its lock per attempt.
        swap_retries: Attempts of the ``replace`` swap before giving up.
        incremental: See :class:`Incremental`.
        partition: See :class:`Partition`.
        max_retries: Retries of a run after a transient error (lost connection, server
            shutdown, deadlock…); each resumes from the last committed batch.
        retry_backoff: Seconds before the first retry; doubles each time, with jitter.
        max_rejects: Rows that may be set aside in ``pgferry.rejects`` (a count, or a
            fraction of the rows read when below 1) before the run fails. ``0``: the first
            bad row fails the run, with a message naming its key and column.
        lock_wait: Seconds to wait for another run of the same job and partition to finish.
        state_schema: Schema of the ledger, runs and rejects tables in the target database.
        run_key: The caller's identity of this run (an Airflow DAG run and task, say). When a
            run of the same job and partition has already committed its rows under this key,
            a run whose repetition would add the rows again (a full ``append``) does nothing
            and returns status ``skipped``: clearing a finished task and running it again is
            safe. Other modes ignore it for that purpose (running them again is idempotent)
            but record it in the run history.
        state: See :class:`State`; required when the target is an HTTP endpoint.
    """

    name: str = ""
    source: Source
    target: Target
    transform: str | Callable[..., Any] | None = None
    batch_size: int = Field(default=10_000, ge=1, le=10_000_000)
    batch_bytes: int = Field(default=1_048_576, ge=65_536, le=1_073_741_824)
    queue_depth: int = Field(default=4, ge=1, le=1_000)
    workers: int | Literal["auto"] = "auto"
    pipelines: int | Literal["auto"] = "auto"
    connect_timeout: float = Field(default=10.0, gt=0)
    statement_timeout: float | None = Field(default=None, gt=0)
    lock_timeout: float = Field(default=5.0, gt=0)
    swap_retries: int = Field(default=5, ge=1)
    incremental: Incremental | None = None
    partition: Partition | None = None
    max_retries: int = Field(default=3, ge=0, le=100)
    retry_backoff: float = Field(default=1.0, ge=0)
    max_rejects: float = Field(default=0, ge=0)
    lock_wait: float = Field(default=60.0, ge=0)
    state_schema: str = Field(default="pgferry", min_length=1, max_length=63)
    run_key: str | None = Field(default=None, min_length=1, max_length=1000)
    state: State | None = None

    @field_validator("transform")
    @classmethod
    def _transform_path(cls, value: Any) -> Any:
        if isinstance(value, str) and not _IMPORT_PATH.fullmatch(value):
            raise ValueError(f"{value!r} is not an import path of the form package.module:function")
        return value

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 <= value <= 64:
            raise ValueError("workers must be 'auto' or an integer from 0 to 64")
        return value

    @field_validator("pipelines")
    @classmethod
    def _pipelines(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 64:
            raise ValueError("pipelines must be 'auto' or an integer from 1 to 64")
        return value

    @model_validator(mode="after")
    def _pool_or_pipelines(self) -> Job:
        several = isinstance(self.pipelines, int) and self.pipelines > 1
        if several and isinstance(self.workers, int) and self.workers > 0:
            raise ValueError(
                "pipelines > 1 runs the transform inline in each pipeline: set workers to "
                "0 or 'auto', or pipelines to 1 to use a pool of transform processes"
            )
        return self

    @model_validator(mode="after")
    def _default_name(self) -> Job:
        if not self.name:
            http = self.target.http
            name = http.default_job_name() if http is not None else str(self.target.table)
            object.__setattr__(self, "name", name)
        return self

    @model_validator(mode="after")
    def _consistent_modes(self) -> Job:
        mode, inc, part = self.target.mode, self.incremental, self.partition
        if self.target.http is not None:
            check_http_job(self)
        # A source table's primary key (or unique NOT NULL index) is the default key; it is
        # read at plan time (pgferry.keys). A query declares none, so it needs one here.
        table_keys = self.source.table is not None
        if mode == "upsert" and not self.upsert_key and not table_keys:
            raise ValueError("mode 'upsert' needs target.key (the columns of a unique key)")
        if self.target.sync_deletes and (mode != "upsert" or inc is not None or part):
            raise ValueError(
                "target.sync_deletes works only with mode 'upsert', without incremental "
                "or partition"
            )
        if inc is not None:
            if mode == "replace":
                raise ValueError("incremental loads need mode 'append' or 'upsert', not 'replace'")
            if not self.read_key and not table_keys:
                raise ValueError(
                    "incremental needs a key to order rows that share a value of "
                    f"{inc.column!r}: set incremental.key, source.key or target.key"
                )
            if inc.lookback and mode != "upsert":
                raise ValueError("incremental.lookback re-reads rows, so it needs mode 'upsert'")
        if part is not None and part.replace and mode == "replace":
            raise ValueError("partition.replace and mode 'replace' do not combine")
        if part is not None and part.replace and inc is not None:
            # The slice is deleted whole, so it must be read whole: a watermark would reload
            # only part of what was deleted.
            raise ValueError("partition.replace reloads a whole slice: drop incremental")
        return self

    @property
    def repeat_duplicates(self) -> bool:
        """Whether running this job again after a success would write its rows again.

        True for a full ``append`` (no incremental column, no partition reload); upserts,
        replaces, incremental loads and partition reloads converge instead.
        """
        part = self.partition
        return (
            self.target.mode == "append"
            and self.incremental is None
            and not (part is not None and part.replace)
        )

    @property
    def upsert_key(self) -> list[str] | None:
        """The key upserts match on: ``target.key``."""
        return self.target.key

    @property
    def read_key(self) -> list[str] | None:
        """Columns that order the source for resuming: incremental, source or target key."""
        if self.incremental is not None and self.incremental.key:
            return self.incremental.key
        return self.source.key or self.target.key

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "job") -> Job:
        """Validate a plain mapping (as from a file, CLI options or orchestrator config).

        Raises:
            ConfigError: Naming every offending key.
        """
        try:
            return cls(**dict(data))
        except JobValidationError as exc:
            raise _validation_error(exc.problems, where) from None

    def with_overrides(self, **changes: Any) -> Job:
        """A copy of the job with top-level fields replaced, validated again."""
        # Only fields that were set: defaults stay defaults, not values the user chose.
        data = self.model_dump(exclude_unset=True)
        data.update(changes)
        return Job.from_dict(data)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description with DSN passwords masked (for logs and metadata)."""
        data = self.model_dump(mode="json", exclude={"transform"})
        for side in ("source", "target"):
            data[side]["dsn"] = mask_dsn(data[side]["dsn"])
        if self.target.http is not None:
            data["target"]["http"] = self.target.http.describe()
        if self.state is not None:
            data["state"]["dsn"] = mask_dsn(self.state.dsn)
        data["transform"] = (
            self.transform
            if isinstance(self.transform, str) or self.transform is None
            else f"{getattr(self.transform, '__module__', '?')}:"
            f"{getattr(self.transform, '__qualname__', repr(self.transform))}"
        )
        return data
