"""The Assets of a pgferry task: declared when DAG parsing can name them, else through an alias.

Airflow records an event for each declared outlet Asset of a successful task and draws the
producing task in its asset graph. A target whose URI needs a connection that DAG parsing must
not fetch (one in the metadata DB or a secrets backend), or a templated table, is named only
when the task runs: its event goes through an :class:`~airflow.sdk.AssetAlias`.

An alias event for an Asset that Airflow does not know yet makes the API server create that
Asset (and link it to the alias) while it records the task's success. Mapped tasks that finish
together would each try to create it, and all but one fail with a unique violation on
``asset``'s name and URI (or on ``asset_alias_asset``), which marks them failed after their
rows were committed. :func:`alias_event_allowed` avoids that race: only map index 0 may create
the link; the other map indexes emit once the alias already resolves to the target.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from airflow.sdk import Asset, AssetAlias, Connection

from pgferry.airflow.hooks import connection_from_environment, table_uri
from pgferry.spec import Job

__all__ = ["ALIAS_WAIT_S", "alias_event_allowed", "alias_targets", "known_asset", "parse_assets"]

ALIAS_WAIT_S = 60.0
"""How long a mapped task (map index > 0) waits for map index 0 to create the target's Asset."""
_POLL_S = 2.0


def known_asset(
    side: str,
    *,
    job: Job | str | None,
    table: str | None,
    query: str | None,
    conn_id: str | None,
    overrides: Mapping[str, Any],
) -> Asset | None:
    """The Asset of the source or target table, if known without I/O, else ``None``.

    Known when the table is a literal name (no template, no override) and the connection is an
    ``AIRFLOW_CONN_…`` variable, or the :class:`pgferry.Job` holds a ``postgres://`` DSN. Never
    raises: a DAG file must parse whatever the connection holds.
    """
    try:
        if {f"{side}.table", f"{side}.query", f"{side}.dsn"} & set(overrides):
            return None
        if side == "source" and query is not None:
            return None
        model = job if isinstance(job, Job) else None
        part = None if model is None else (model.source if side == "source" else model.target)
        name = table if table is not None else getattr(part, "table", None)
        if name is None or (isinstance(name, str) and "{{" in name):
            return None
        if conn_id:
            conn = connection_from_environment(conn_id)
        elif part is not None and part.dsn and "://" in part.dsn:
            conn = Connection.from_uri(part.dsn, conn_id="pgferry")
        else:
            conn = None
        return Asset(uri=table_uri(conn, name)) if conn is not None else None
    except Exception:
        return None


def parse_assets(args: Mapping[str, Any], alias_name: str) -> tuple[list[Any], list[Any]]:
    """The inlets and outlets of a task with these operator arguments, at DAG parse time.

    The target's Asset when it is known, else the alias that names it at run time (never both:
    an alias that nothing resolves through would be one more node in the asset graph).
    """
    job, overrides = args.get("job"), args.get("overrides") or {}
    source = known_asset(
        "source",
        job=job,
        table=args.get("source_table"),
        query=args.get("source_query"),
        conn_id=args.get("source_conn_id"),
        overrides=overrides,
    )
    target = known_asset(
        "target",
        job=job,
        table=args.get("target_table"),
        query=None,
        conn_id=args.get("target_conn_id"),
        overrides=overrides,
    )
    inlets: list[Any] = [source] if source is not None else []
    outlets: list[Any] = [target] if target is not None else [AssetAlias(name=alias_name)]
    return inlets, outlets


def alias_targets(alias_name: str) -> set[str] | None:
    """URIs of the Assets the alias resolves to in Airflow, or ``None`` if that cannot be asked
    (no task runner, or an Airflow whose task SDK lacks the request)."""
    try:
        from airflow.sdk.execution_time.comms import AssetsByAliasResult, GetAssetsByAlias
        from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

        resp = SUPERVISOR_COMMS.send(GetAssetsByAlias(alias_name=alias_name))
    except Exception:
        return None
    if not isinstance(resp, AssetsByAliasResult):
        return None
    return {a.uri for a in resp.assets}


def alias_event_allowed(
    map_index: int | None,
    alias_name: str,
    target: str,
    *,
    warn: Callable[..., Any],
    wait_s: float = ALIAS_WAIT_S,
    lookup: Callable[[str], set[str] | None] = alias_targets,
) -> bool:
    """Whether this task may add its target's event through the alias now (see the module doc).

    An unmapped task always may. A mapped one may when the alias already resolves to the target
    (nothing is created), or when it is map index 0 (the one task that creates the link). Other
    map indexes wait up to ``wait_s`` for map index 0 to do so; past that, they add no event
    (with a warning) rather than race to create the Asset and fail a committed load.
    """
    if map_index is None or map_index < 0:
        return True
    deadline = time.monotonic() + wait_s
    while True:
        resolved = lookup(alias_name)
        if resolved is not None and target in resolved:
            return True
        if map_index == 0:
            return True
        if resolved is None or time.monotonic() >= deadline:
            break
        time.sleep(_POLL_S)
    warn(
        "pgferry: no Asset event for map index %s: Airflow does not know the target's Asset %s "
        "yet, and only map index 0 may create it through alias %r (mapped tasks creating it "
        "together fail in Airflow's API server). Declare the target at parse time to record "
        "every event: a literal target_table and an AIRFLOW_CONN_… connection, or outlets=[…]",
        map_index,
        target,
        alias_name,
    )
    return False
