"""PgferryHook: an Airflow ``postgres`` connection as an asyncpg DSN, an Asset and a lineage name.

The connection is the standard one of ``apache-airflow-providers-postgres``: host, port, schema
(the database), login, password and extras. Extras that libpq and asyncpg share (``sslmode``,
``sslrootcert``, ``target_session_attrs``…) go into the DSN; ``options`` (``-c name=value``)
become server settings; extras that only other hooks understand (``cursor``,
``sqlalchemy_scheme``…) are left out. The DSN holds the password: it is never logged, pushed to
XCom or rendered into a template field; :attr:`PgferryHook.masked_dsn` is what may be shown.
"""

from __future__ import annotations

import os
import shlex
import urllib.parse
from functools import cached_property
from typing import Any

from airflow.sdk import Asset, BaseHook, Connection
from airflow.sdk.log import mask_secret

from pgferry._dsn import mask_dsn
from pgferry.errors import ConfigError
from pgferry.sql import TableName

__all__ = [
    "PgferryHook",
    "connection_from_environment",
    "dsn_from_connection",
    "table_asset",
    "table_uri",
]

# Query parameters asyncpg reads as connection options (any other one becomes a server setting,
# which would fail the connection for keys such as ``cursor``).
_DSN_EXTRAS = frozenset(
    {
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "sslpassword",
        "sslnegotiation",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "passfile",
        "service",
        "application_name",
    }
)
_POSTGRES_TYPES = frozenset({"postgres", "postgresql"})
DEFAULT_SCHEMA = "public"


def _server_settings(options: str) -> dict[str, str]:
    """libpq ``options`` (``-c search_path=x -c statement_timeout=5s``) as server settings."""
    settings: dict[str, str] = {}
    tokens = iter(shlex.split(options))
    for token in tokens:
        if token == "-c":
            token = next(tokens, "")
        elif token.startswith(("-c", "--")):
            token = token[2:]
        else:
            raise ConfigError(
                f"connection extra 'options': {token!r} is not a '-c name=value' setting"
            )
        name, sep, value = token.partition("=")
        if not sep or not name:
            raise ConfigError(f"connection extra 'options': expected name=value, got {token!r}")
        settings[name.replace("-", "_")] = value
    return settings


def _check_type(conn: Connection) -> None:
    if conn.conn_type and conn.conn_type not in _POSTGRES_TYPES:
        raise ConfigError(
            f"connection {conn.conn_id!r} is of type {conn.conn_type!r}; pgferry needs a "
            "'postgres' connection"
        )


def dsn_from_connection(conn: Connection, database: str | None = None) -> str:
    """The asyncpg DSN of a ``postgres`` connection (it holds the password: do not log it).

    Args:
        conn: The Airflow connection.
        database: A database that replaces the connection's ``schema`` field.

    Raises:
        ConfigError: The connection is not a postgres one, names no host or database, or asks
            for something pgferry cannot do (IAM tokens, unparsable ``options``).
    """
    _check_type(conn)
    extra: dict[str, Any] = conn.extra_dejson
    if extra.get("iam"):
        raise ConfigError(
            f"connection {conn.conn_id!r} asks for IAM authentication, which pgferry does not "
            "support: give a password or a passfile"
        )
    db = database or conn.schema
    if not db:
        raise ConfigError(
            f"connection {conn.conn_id!r} names no database (the 'schema' field of a postgres "
            "connection)"
        )
    query: dict[str, str] = {}
    host = conn.host or ""
    netloc = ""
    if conn.login:
        netloc = urllib.parse.quote(conn.login, safe="")
        if conn.password:
            quoted = urllib.parse.quote(conn.password, safe="")
            if quoted != conn.password:
                # Airflow masks the password as stored; inside the DSN it reads differently
                # (`p%40ss` for `p@ss`), so that form is masked too, in task logs and XComs.
                mask_secret(quoted)
            netloc += ":" + quoted
        netloc += "@"
    if host.startswith("/"):
        # A Unix socket directory cannot sit in the authority part.
        query["host"] = host
        if conn.port:
            query["port"] = str(conn.port)
    elif host:
        netloc += f"[{host}]" if ":" in host else host
        if conn.port:
            netloc += f":{conn.port}"
    else:
        raise ConfigError(f"connection {conn.conn_id!r} names no host")
    for key, value in extra.items():
        if key in _DSN_EXTRAS and value is not None:
            query[key] = str(value)
    if extra.get("options"):
        for name, value in _server_settings(str(extra["options"])).items():
            query.setdefault(name, value)
    # Built by hand: urlunsplit drops the '//' of an empty authority (a Unix socket).
    path = "/" + urllib.parse.quote(db, safe="")
    encoded = urllib.parse.urlencode(query)
    return f"postgresql://{netloc}{path}" + (f"?{encoded}" if encoded else "")


def _authority(conn: Connection) -> str:
    host = conn.host or "localhost"
    if host.startswith("/"):
        host = "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{conn.port or 5432}"


def _table_parts(table: str | TableName) -> tuple[str, str]:
    name = TableName.parse(table)
    return (name.schema or DEFAULT_SCHEMA, name.name)


def table_uri(conn: Connection, table: str | TableName, database: str | None = None) -> str:
    """The postgres provider's Asset URI of a table: ``postgres://host:port/db/schema/table``.

    An unqualified table name is taken to be in ``public``.
    """
    _check_type(conn)
    db = database or conn.schema or ""
    parts = (db, *_table_parts(table))
    path = "/".join(urllib.parse.quote(p, safe="") for p in parts)
    return f"postgres://{_authority(conn)}/{path}"


def connection_from_environment(conn_id: str) -> Connection | None:
    """The connection ``conn_id`` if an ``AIRFLOW_CONN_<ID>`` variable defines it, else ``None``.

    Reads the process environment only (a URI or Airflow's JSON form), never a secrets backend
    or the metadata database, so DAG parsing may call it.
    """
    value = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if not value:
        return None
    try:
        if value.lstrip().startswith("{"):
            return Connection.from_json(value, conn_id=conn_id)
        return Connection.from_uri(value, conn_id=conn_id)
    except Exception:  # a malformed variable fails at run time, with Airflow's own message
        return None


def table_asset(
    conn: Connection | str, table: str | TableName, database: str | None = None
) -> Asset:
    """The Asset of a table, for ``schedule=[…]`` of DAGs that wait for a pgferry target.

    Args:
        conn: The connection, or its URI (such as the value of an ``AIRFLOW_CONN_…`` variable).
        table: The table name, as given to the operator.
        database: A database that replaces the connection's.
    """
    if isinstance(conn, str):
        conn = Connection.from_uri(conn, conn_id="pgferry")
    return Asset(uri=table_uri(conn, table, database))


class PgferryHook(BaseHook):
    """Connection details of one PostgreSQL database, as pgferry needs them.

    Args:
        postgres_conn_id: The Airflow connection (type ``postgres``).
        database: A database that replaces the connection's ``schema`` field.
    """

    conn_name_attr = "postgres_conn_id"
    default_conn_name = "postgres_default"
    conn_type = "postgres"
    hook_name = "pgferry (PostgreSQL)"

    def __init__(
        self, postgres_conn_id: str = default_conn_name, database: str | None = None
    ) -> None:
        super().__init__()
        self.postgres_conn_id = postgres_conn_id
        self.database = database

    @cached_property
    def connection(self) -> Connection:
        """The Airflow connection (fetched once)."""
        conn: Connection = self.get_connection(self.postgres_conn_id)
        return conn

    @cached_property
    def dsn(self) -> str:
        """The asyncpg DSN. It holds the password: never log it; log :attr:`masked_dsn`."""
        return dsn_from_connection(self.connection, self.database)

    @property
    def masked_dsn(self) -> str:
        """The DSN with its password replaced by ``***``."""
        return mask_dsn(self.dsn) or ""

    @property
    def database_name(self) -> str:
        """The database the DSN connects to."""
        return self.database or self.connection.schema or ""

    def table_uri(self, table: str | TableName) -> str:
        """The Asset URI of ``table`` in this database."""
        return table_uri(self.connection, table, self.database)

    def table_asset(self, table: str | TableName) -> Asset:
        """The Asset of ``table`` in this database."""
        return Asset(uri=self.table_uri(table))

    @property
    def openlineage_namespace(self) -> str:
        """The OpenLineage namespace of this server: ``postgres://host:port``."""
        return f"postgres://{_authority(self.connection)}"

    def openlineage_name(self, table: str | TableName) -> str:
        """The OpenLineage dataset name of ``table``: ``database.schema.table``."""
        schema, name = _table_parts(table)
        return f"{self.database_name}.{schema}.{name}"
