"""Plan a run: what to read (query, columns, position order) and how to commit it.

Where a run starts depends on the ledger: an incremental load continues strictly after its
committed watermark, an unfinished full load with a key continues after its progress position,
everything else starts from the beginning.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg

from pgferry import schema, sql
from pgferry.errors import SchemaError
from pgferry.keys import KeyChoice
from pgferry.schema import Column
from pgferry.spec import Job
from pgferry.state import LedgerEntry

__all__ = ["PIPELINES_MARKER", "SourcePlan", "plan_source", "position_text"]

PIPELINES_MARKER = "pgferry:pipelines"
"""First value of a ledger ``progress`` that records the key ranges of a parallel run."""


@dataclass
class SourcePlan:
    """What the extract stage reads and what the loader commits with each batch.

    Attributes:
        query: The final source query, with bind parameters.
        args: Its parameters (text, converted by the server).
        columns: Source columns with exact types.
        estimate: The planner's row estimate when reading a table.
        position_columns: Columns whose values in the last row of a batch are committed with
            it (``[]`` when the run does not resume).
        position_kind: ``watermark`` (incremental), ``progress`` (resumable full load) or
            ``None``.
        txn_scope: ``batch`` (one transaction per batch) or ``run`` (all batches in one
            transaction: an append with no key to resume by, or a partition reloaded whole).
        start: The position the run starts after, as text, if any.
        base: The source query before position filtering and ordering.
        unordered: ``query`` without its ORDER BY (the binary pipe reads in one go).
        base_args: The parameters of ``base`` (the source query's own).
        where: The filters ``query`` applies to ``base`` (SQL built by :mod:`pgferry.sql`),
            for a lane that reads ``base`` its own way.
        key: Which key the run uses and why (:mod:`pgferry.keys`), once resolved.
        comment: The source table's comment (copied to a target pgferry creates).
    """

    query: str
    args: list[Any]
    columns: list[Column]
    estimate: int | None
    position_columns: list[str] = field(default_factory=list)
    position_kind: Literal["watermark", "progress"] | None = None
    txn_scope: Literal["batch", "run"] = "batch"
    start: list[str] | None = None
    base: str = ""
    unordered: str = ""
    base_args: list[Any] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    key: KeyChoice | None = None
    comment: str | None = None

    @property
    def position_index(self) -> list[int]:
        """Indexes of the position columns in ``columns``."""
        names = [c.name for c in self.columns]
        return [names.index(c) for c in self.position_columns]


def position_text(values: Sequence[Any]) -> list[str]:
    """Position values as text the server converts back exactly (``$n::text::type``)."""
    out = []
    for value in values:
        if isinstance(value, bool):
            out.append("true" if value else "false")
        elif isinstance(value, dt.datetime):
            out.append(value.isoformat(sep=" "))
        elif isinstance(value, dt.date | dt.time):
            out.append(value.isoformat())
        elif isinstance(value, float):
            out.append(repr(value))
        elif isinstance(value, decimal.Decimal | int):
            out.append(str(value))
        else:
            out.append(str(value))
    return out


async def describe_source(
    conn: asyncpg.Connection, job: Job
) -> tuple[str, list[Column], int | None]:
    """The base query, its columns with exact types, and a row estimate if known."""
    src = job.source
    if src.table is not None:
        columns = await schema.describe_table(conn, src.table)
        if columns is None:
            raise SchemaError(f"source table {src.table} does not exist", job=job.name)
        base = sql.select_from_table(src.table, [c.name for c in columns])
        estimate = await schema.estimate_rows(conn, src.table)
    else:
        assert src.query is not None
        try:
            columns = await schema.describe_query(conn, src.query)
        except asyncpg.PostgresError as exc:
            raise SchemaError(
                f"the source query is not valid: {type(exc).__name__}: {exc}", job=job.name
            ) from exc
        base, estimate = src.query, None
    schema.check_unique_names(columns, "the source")
    return base, columns, estimate


_PARSERS: dict[str, Any] = {
    "timestamptz": dt.datetime.fromisoformat,
    "timestamp": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "int2": int,
    "int4": int,
    "int8": int,
    "numeric": decimal.Decimal,
    "float4": float,
    "float8": float,
    "bool": lambda v: v.strip().lower() in ("t", "true", "1", "yes", "on"),
}


async def coerce_params(conn: asyncpg.Connection, job: Job) -> list[Any]:
    """The source query's parameters, text converted to the types the server expects."""
    assert job.source.query is not None
    try:
        stmt = await conn.prepare(job.source.query)
    except asyncpg.PostgresError as exc:
        raise SchemaError(
            f"the source query is not valid: {type(exc).__name__}: {exc}", job=job.name
        ) from exc
    types = [t.name for t in stmt.get_parameters()]
    if len(types) != len(job.source.params):
        raise SchemaError(
            f"the source query takes {len(types)} parameters but source.params has "
            f"{len(job.source.params)}",
            job=job.name,
        )
    out: list[Any] = []
    for i, (value, type_name) in enumerate(zip(job.source.params, types, strict=True), 1):
        parse = _PARSERS.get(type_name)
        if isinstance(value, str) and parse is not None:
            try:
                value = parse(value)
            except ValueError as exc:
                raise SchemaError(
                    f"source.params[{i - 1}] = {value!r} is not a valid {type_name} for ${i}",
                    job=job.name,
                ) from exc
        out.append(value)
    return out


def _require(columns: Sequence[Column], names: Sequence[str], why: str, job: Job) -> list[str]:
    types = {c.name: c.type for c in columns}
    missing = [n for n in names if n not in types]
    if missing:
        raise SchemaError(
            f"the source has no column {missing[0]!r}, needed {why} (it has: {', '.join(types)})",
            job=job.name,
            column=missing[0],
        )
    return [types[n] for n in names]


async def plan_source(conn: asyncpg.Connection, job: Job, ledger: LedgerEntry | None) -> SourcePlan:
    """Build the source plan of a run from the job and the ledger entry."""
    base, columns, estimate = await describe_source(conn, job)
    names = [c.name for c in columns]
    inc, part, mode = job.incremental, job.partition, job.target.mode
    where: list[str] = []
    args: list[Any] = await coerce_params(conn, job) if job.source.params else []

    if part is not None:
        (ptype,) = _require(columns, [part.column], "by the partition", job)
        lower = upper = None
        if part.lower is not None:
            args.append(str(part.lower))
            lower = len(args)
        if part.upper is not None:
            args.append(str(part.upper))
            upper = len(args)
        where.append(sql.range_filter(part.column, ptype, lower, upper))

    plan = SourcePlan(
        query="", args=args, columns=columns, estimate=estimate, base=base, base_args=list(args)
    )
    if job.source.table is not None:
        plan.comment = await schema.table_comment(conn, job.source.table)
    key = job.read_key or []
    if inc is not None:
        plan.position_kind = "watermark"
        plan.position_columns = [inc.column, *[k for k in key if k != inc.column]]
        types = _require(columns, plan.position_columns, "by the incremental position", job)
        start = ledger.watermark if ledger else None
        if start is not None and len(start) != len(types):
            raise SchemaError(
                f"the stored watermark has {len(start)} values but the position "
                f"({', '.join(plan.position_columns)}) has {len(types)}: the job's incremental "
                "column or key changed; run `pgferry reset` for this job",
                job=job.name,
            )
        if start is not None and inc.lookback:
            args += [start[0], inc.lookback]
            where.append(sql.at_least_minus_interval(inc.column, types[0], len(args) - 1))
        elif start is not None:
            first = len(args) + 1
            args += start
            where.append(sql.row_after(plan.position_columns, types, first))
        elif inc.initial is not None:
            args.append(str(inc.initial))
            where.append(sql.at_least(inc.column, types[0], len(args)))
        plan.start = start
    elif key and mode == "append" and not (part is not None and part.replace):
        # A full append resumes after the last committed key. (A full upsert does not need
        # to: redoing it rewrites nothing, and ordering by key would lose the source's order
        # among versions of one key.)
        plan.position_kind = "progress"
        plan.position_columns = list(key)
        types = _require(columns, key, "as the key", job)
        start = ledger.progress if ledger else None
        if start and start[0] == PIPELINES_MARKER:
            start = None  # ranges of a parallel run: engine.parallel continues them
        if start is not None and len(start) == len(types):
            first = len(args) + 1
            args += start
            where.append(sql.row_after(key, types, first))
            plan.start = start
    elif mode == "append" or (part is not None and part.replace):
        # Nothing to resume by: the whole run is one transaction, so a crash leaves nothing.
        plan.txn_scope = "run"
    if part is not None and part.replace:
        plan.txn_scope = "run"
    plan.where = where
    plan.query = sql.ordered_source(base, names, where=where, order_by=plan.position_columns)
    plan.unordered = sql.ordered_source(base, names, where=where, order_by=())
    return plan
