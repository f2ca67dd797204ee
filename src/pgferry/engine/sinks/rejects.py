"""The ``max_rejects`` budget, shared by every sink: how many refused rows a run may set aside.

``max_rejects`` is a count (``>= 1``), a fraction of the rows read (``0 < x < 1``, checked at the
end of the run), or ``0``: the first refused row fails the run, with a message naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pgferry.engine.sinks.base import Reject
from pgferry.errors import LoadError
from pgferry.result import RunResult
from pgferry.spec import Job

__all__ = ["RejectBudget"]


class RejectBudget:
    """Counts a run's rejected rows against ``job.max_rejects``.

    Args:
        job: The job.
        result: The run's result (rows read and rejected so far).
        describe: The sentence that names one rejected row in an error.
    """

    def __init__(self, job: Job, result: RunResult, describe: Callable[[Reject], str]) -> None:
        self.job = job
        self.result = result
        self.describe = describe
        self.total = 0

    def error(self, seq: int, reject: Reject) -> LoadError:
        """The error that a rejected row raises when none may be set aside."""
        return LoadError(
            f"{self.describe(reject)} (set max_rejects to set such rows aside in the rejects "
            "table instead)",
            job=self.job.name,
            batch=seq,
            column=reject[3],
        )

    def check(self, seq: int, found: Sequence[Reject]) -> None:
        """Before batch ``seq`` commits with ``found`` rejects: raise if they are too many."""
        limit = self.job.max_rejects
        total = self.total + len(found)
        if limit == 0:
            raise self.error(seq, found[0])
        if limit >= 1 and total > limit:
            raise LoadError(
                f"{total} rows rejected, more than max_rejects={limit:g}; the last: "
                f"{self.describe(found[-1])}",
                job=self.job.name,
                batch=seq,
            )

    def committed(self, found: Sequence[Reject]) -> None:
        """Batch committed with ``found`` rejects."""
        self.total += len(found)

    def check_fraction(self) -> None:
        """At the end of a run: a fractional ``max_rejects`` against the rows read."""
        limit = self.job.max_rejects
        read = self.result.rows_read
        if 0 < limit < 1 and read and self.result.rows_rejected / read > limit:
            raise LoadError(
                f"{self.result.rows_rejected} of {read} rows rejected, more than "
                f"max_rejects={limit:g} of the rows read",
                job=self.job.name,
            )
