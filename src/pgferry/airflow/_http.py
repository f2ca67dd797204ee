"""HTTP targets in Airflow: an ``http`` connection as ``target.http``, and the endpoint's lineage.

The connection is the one of ``apache-airflow-providers-http``, read as its ``HttpHook`` reads
it: the base URL from the host (which may hold a scheme) or the schema (``http``/``https``) and
the port; ``login``/``password`` as basic authentication; the extras as headers, except the keys
that ``HttpHook`` takes as request options. The endpoint is joined to the base URL as
``HttpHook.url_from_endpoint`` does.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset, BaseHook, Connection

from pgferry.airflow.hooks import PgferryHook
from pgferry.errors import ConfigError
from pgferry.httpspec import mask_url
from pgferry.spec import Job

__all__ = ["endpoint_asset", "endpoint_dataset", "http_lineage", "http_target_changes", "url_of"]

# Extras HttpHook reads as options of the request, not as headers.
_NOT_HEADERS = frozenset(
    {
        "auth_type",
        "auth_kwargs",
        "stream",
        "cert",
        "proxies",
        "verify",
        "allow_redirects",
        "max_redirects",
        "trust_env",
        "timeout",
        "check_response",
        "adapter",
    }
)


def base_url(conn: Connection) -> str:
    """The base URL of an ``http`` connection, as ``HttpHook`` builds it."""
    host = conn.host or ""
    if "://" in host:
        base = host
    else:
        scheme = conn.schema or ("https" if conn.conn_type == "https" else "http")
        base = f"{scheme}://{host}"
        if conn.port:
            base += f":{conn.port}"
    return base


def url_of(conn: Connection, endpoint: str | None) -> str:
    """The base URL joined with the endpoint."""
    base = base_url(conn)
    if not endpoint:
        return base
    return base.rstrip("/") + "/" + endpoint.lstrip("/")


def headers_of(conn: Connection) -> dict[str, str]:
    """Headers from the connection's extras and its login (basic authentication)."""
    extras: dict[str, Any] = conn.extra_dejson or {}
    headers = {
        str(k): str(v)
        for k, v in extras.items()
        if k not in _NOT_HEADERS and isinstance(v, str | int | float)
    }
    if conn.login:
        token = base64.b64encode(f"{conn.login}:{conn.password or ''}".encode()).decode()
        headers.setdefault("Authorization", f"Basic {token}")
    return headers


def http_target_changes(
    conn_id: str | None, endpoint: str | None, state_conn_id: str | None
) -> dict[str, Any]:
    """Dotted job keys for an HTTP target from the operator's arguments (fetches connections)."""
    changes: dict[str, Any] = {}
    state_dsn = PgferryHook(state_conn_id).dsn if state_conn_id else None
    if conn_id:
        conn = BaseHook.get_connection(conn_id)
        changes["target.http.url"] = url_of(conn, endpoint)
        headers = headers_of(conn)
        if headers:
            changes["target.http.headers"] = headers
    elif endpoint:
        if "://" not in endpoint:
            raise ConfigError("endpoint without target_http_conn_id must be a whole URL")
        changes["target.http.url"] = endpoint
    if state_dsn:
        changes["state.dsn"] = state_dsn
    return changes


def endpoint_dataset(url: str) -> tuple[str, str]:
    """The OpenLineage (namespace, name) of an endpoint: ``scheme://host:port`` and the path.

    The query is left out (it may hold a key); so are credentials.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}", parts.path or "/"


def endpoint_asset(url: str) -> Asset:
    """The Airflow Asset of an endpoint (no credentials, no query)."""
    namespace, name = endpoint_dataset(url)
    return Asset(uri=f"{namespace}{name}")


def shown_url(url: str | None) -> str:
    """The URL as it may appear in a log line."""
    return mask_url(url) or ""


def http_lineage(
    job: Job, source_hook: PgferryHook, result: Mapping[str, Any] | None, *, introspect: bool
) -> Any:
    """OpenLineage of a job whose target is an endpoint: the endpoint as the output dataset."""
    from pgferry.airflow import lineage

    assert job.target.http is not None
    table = job.source.table
    source = lineage.dataset_of(source_hook, table) if table is not None else None
    info = lineage.gather(
        job,
        source=source,
        target=lineage.DatasetRef(*endpoint_dataset(job.target.http.url)),
        namespace=source_hook.openlineage_namespace,
        database=source_hook.database_name,
        introspect=introspect,
    )
    return lineage.operator_lineage(info, result)
