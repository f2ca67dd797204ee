"""The kill harness: run ``pgferry run`` in a subprocess, stop it at a point the target shows.

Kill points are observed progress, never wall-clock delays, so a kill lands where it says on a
fast machine and on a loaded one alike, and a test can assert how many of its kills landed:

* :meth:`KillPoint.started`: the run has registered (its row in ``pgferry.runs``: the job's
  lock is held, nothing is written yet);
* :meth:`KillPoint.after_batches`: ``n`` more batches committed (the ledger's ``batches``,
  summed over the job's partitions, so the pipelines of a parallel run count together);
* :meth:`KillPoint.after_pages`: the target table grew by ``n`` pages. A run that commits once,
  at its end, shows nothing in the ledger before then, but the rows it writes take room at once;
* :meth:`KillPoint.when`: any other observed progress (the rows an HTTP endpoint has accepted).

The harness looks at the target between waits for the process to exit (``POLL_S``), through
one connection of its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import asyncpg

POLL_S = 0.005
"""How long to wait for the process to exit between two looks at the target."""
TIMEOUT_S = 240.0
"""A run that neither reaches its kill point nor ends in this time fails the test."""
PAGE = 8192


@dataclass(frozen=True)
class KillPoint:
    """Where in a run to stop it (see the module's docstring)."""

    kind: Literal["started", "batches", "pages", "when"]
    n: int = 0
    reached: Callable[[], bool] | None = None
    what: str = ""

    @classmethod
    def started(cls) -> KillPoint:
        return cls("started", 1)

    @classmethod
    def after_batches(cls, n: int) -> KillPoint:
        return cls("batches", n)

    @classmethod
    def after_pages(cls, n: int) -> KillPoint:
        return cls("pages", n)

    @classmethod
    def when(cls, what: str, reached: Callable[[], bool]) -> KillPoint:
        """When ``reached()`` (asked between waits) is true; ``what`` describes the point."""
        return cls("when", 1, reached, what)

    def __str__(self) -> str:
        if self.kind == "when":
            return self.what
        return "at start" if self.kind == "started" else f"after {self.n} {self.kind}"


@dataclass
class Outcome:
    """How one run ended: ``landed`` when the signal reached a process still running."""

    landed: bool
    returncode: int
    stderr: str


@dataclass
class Killer:
    """Runs one job file with ``pgferry run --quiet`` and stops it at chosen points.

    Attributes:
        job: The job file.
        target: DSN of the target database (where the state tables are).
        name: The job's name (its rows in ``pgferry.runs`` and ``pgferry.ledger``).
        table: The target table :meth:`KillPoint.after_pages` watches.
        args: More arguments of ``pgferry run`` (``--run-key k``).
        landed: Each kill that landed, as its point's description.
    """

    job: Path
    target: str
    name: str
    table: str = "dst"
    args: Sequence[str] = ()
    landed: list[str] = field(default_factory=list)

    def finish(self) -> None:
        """Run the job to its end; it must succeed."""
        outcome = self.run(None)
        assert outcome.returncode == 0, outcome.stderr

    def kill(self, point: KillPoint) -> bool:
        """Run the job and SIGKILL it at ``point``; return whether the kill landed.

        A run that ends by itself before ``point`` must have succeeded.
        """
        outcome = self.run(point)
        if outcome.landed:
            assert outcome.returncode == -signal.SIGKILL, outcome
            self.landed.append(str(point))
        else:
            assert outcome.returncode == 0, outcome.stderr
        return outcome.landed

    def run(self, point: KillPoint | None, sig: signal.Signals = signal.SIGKILL) -> Outcome:
        """Run the job; at ``point`` (if it comes before the end) send ``sig``."""
        loop = asyncio.new_event_loop()
        conn: asyncpg.Connection = loop.run_until_complete(asyncpg.connect(self.target))
        try:
            before = 0
            if point is not None and point.reached is None:
                before = loop.run_until_complete(self._observe(conn, point))
            with tempfile.TemporaryFile("w+") as err:  # a pipe could fill up and block the run
                proc = subprocess.Popen(
                    [sys.executable, "-m", "pgferry", "run", str(self.job), "--quiet", *self.args],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    text=True,
                )
                landed = False
                try:
                    landed = self._wait(proc, loop, conn, point, before, sig)
                    proc.wait(timeout=TIMEOUT_S)
                finally:
                    if proc.poll() is None:  # the test failed: leave no process behind
                        proc.kill()
                        proc.wait()
                err.seek(0)
                return Outcome(landed, proc.returncode, err.read())
        finally:
            loop.run_until_complete(conn.close())
            loop.close()

    def _wait(
        self,
        proc: subprocess.Popen[str],
        loop: asyncio.AbstractEventLoop,
        conn: asyncpg.Connection,
        point: KillPoint | None,
        before: int,
        sig: signal.Signals,
    ) -> bool:
        if point is None:
            return False
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                proc.wait(timeout=POLL_S)
                return False  # it ended before the point
            except subprocess.TimeoutExpired:
                pass
            if loop.run_until_complete(self._observe(conn, point)) - before >= point.n:
                if proc.poll() is not None:
                    return False
                os.kill(proc.pid, sig)
                return True
        raise AssertionError(f"the run reached neither its end nor {point} in {TIMEOUT_S} s")

    async def _observe(self, conn: asyncpg.Connection, point: KillPoint) -> int:
        """The target's progress counter for ``point``'s kind (0 before the state exists)."""
        if point.reached is not None:
            return int(point.reached())
        if point.kind == "pages":
            size: int = await conn.fetchval(
                "SELECT coalesce(pg_relation_size(to_regclass($1)), 0)", self.table
            )
            return size // PAGE
        table = "pgferry.runs" if point.kind == "started" else "pgferry.ledger"
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            return 0
        query = (
            "SELECT count(*) FROM pgferry.runs WHERE job = $1"
            if point.kind == "started"
            else "SELECT coalesce(sum(batches), 0) FROM pgferry.ledger WHERE job = $1"
        )
        value: int = await conn.fetchval(query, self.name)
        return value
