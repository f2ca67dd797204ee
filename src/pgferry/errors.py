"""The pgferry exception hierarchy.

::

    PgferryError
    ├── ConfigError (also ValueError)      invalid job, file, option or argument: fix the input
    │   ├── JobValidationError             a job, source or target failed validation
    │   ├── SchemaError                    source and target tables do not fit together
    │   └── TransformImportError           the transform's import path leads nowhere
    ├── ConnectError                       a server could not be reached or refused the login
    ├── ConcurrentRunError (Transient)     another run of the job holds its lock
    ├── EmbeddedPostgresError              the embedded server could not start or stop
    ├── ExtractError                       reading the source failed
    ├── TransformError                     the user's transform failed or returned bad rows
    └── LoadError                          writing the target failed
        ├── RowLevelPipeFailure            the binary pipe met a row the target refused
        └── SchemaLockError                a schema change never got its lock; names blockers

Every error carries the job name and, where known, the stage, the batch number and the column,
and its message names them. Errors that may succeed when retried (a lost connection, a server
shutting down, a serialisation failure) also inherit :class:`Transient`; the retry logic and the
orchestrator wrappers use that marker to tell a retryable failure from a terminal one.

All errors pickle (they cross process-pool boundaries) and are raised ``from`` their cause.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pgferry.result import RunResult

__all__ = [
    "ConcurrentRunError",
    "ConfigError",
    "ConnectError",
    "EmbeddedPostgresError",
    "ExtractError",
    "JobValidationError",
    "LoadError",
    "PgferryError",
    "RowLevelPipeFailure",
    "SchemaError",
    "SchemaLockError",
    "TransformError",
    "TransformImportError",
    "Transient",
    "TransientConnectError",
    "TransientError",
    "TransientExtractError",
    "TransientLoadError",
]


class PgferryError(Exception):
    """Base class of every error pgferry raises on purpose.

    Attributes:
        message: The plain description, without the context prefix.
        job: Name of the job, when known.
        stage: ``plan``, ``extract``, ``transform`` or ``load``, when known.
        batch: Sequence number of the batch (0-based, in extraction order), when known.
        column: The column involved, when known.
        result: The failed run's :class:`~pgferry.result.RunResult`, on errors that end a run
            (what was committed before the failure, the counters, the error); else ``None``.
    """

    default_stage: str | None = None
    result: RunResult | None = None

    def __init__(
        self,
        message: str,
        *,
        job: str | None = None,
        stage: str | None = None,
        batch: int | None = None,
        column: str | None = None,
    ) -> None:
        self.message = message
        self.job = job
        self.stage = stage if stage is not None else self.default_stage
        self.batch = batch
        self.column = column
        super().__init__(message)

    def __str__(self) -> str:
        context = [
            f"{label} {value!r}" if label in ("job", "column") else f"{label} {value}"
            for label, value in (
                ("job", self.job),
                ("stage", self.stage),
                ("batch", self.batch),
                ("column", self.column),
            )
            if value is not None
        ]
        return f"{self.message} [{', '.join(context)}]" if context else self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments are not restored by the default Exception pickling.
        return (
            _rebuild,
            (
                type(self),
                self.message,
                {
                    "job": self.job,
                    "stage": self.stage,
                    "batch": self.batch,
                    "column": self.column,
                },
            ),
        )

    def with_context(self, **context: Any) -> PgferryError:
        """Fill in context fields that are still unknown; returns ``self``."""
        for name, value in context.items():
            if getattr(self, name, None) is None:
                setattr(self, name, value)
        return self


def _rebuild(cls: type[PgferryError], message: str, context: dict[str, Any]) -> PgferryError:
    return cls(message, **context)


class Transient:
    """Marker mixin: the failure may go away if the same work is retried.

    ``isinstance(exc, Transient)`` is the one test the retry logic and the orchestrator
    wrappers use (Airflow: retryable vs ``AirflowFailException``; Dagster: ``RetryPolicy`` vs
    ``Failure(allow_retries=False)``).
    """


class ConfigError(PgferryError, ValueError):
    """The job, a job file, an option or an argument is invalid."""

    default_stage = "plan"


class SchemaError(ConfigError):
    """Source columns and the target table do not fit (missing or incompatible column)."""


class ConnectError(PgferryError):
    """A server could not be reached, or refused the connection."""


class TransientConnectError(ConnectError, Transient):
    """A connection attempt timed out or the server is starting up / overloaded."""


class ExtractError(PgferryError):
    """Reading from the source failed."""

    default_stage = "extract"


class TransformError(PgferryError):
    """The transform could not be loaded, raised, or returned rows of the wrong shape."""

    default_stage = "transform"


class LoadError(PgferryError):
    """Writing to the target failed."""

    default_stage = "load"


class TransientExtractError(ExtractError, Transient):
    """Reading failed for a reason that may go away on retry (connection lost, shutdown)."""


class TransientError(PgferryError, Transient):
    """A failure that may go away on retry, outside any one stage (e.g. the state tables)."""


class TransientLoadError(LoadError, Transient):
    """Writing failed for a reason that may go away on retry (connection lost, deadlock)."""


class SchemaLockError(LoadError):
    """A schema change never got its table's lock within ``target.lock_timeout`` and its
    retries; the message names the sessions that held it. Nothing of the change was made.
    Not transient: the change retried on its own already (as the ``replace`` swap does), so
    the run's retries do not multiply its waits.

    Attributes:
        blockers: ``(pid, application_name, seconds its transaction has been open)`` of each
            session that held a lock on the table.
    """

    def __init__(
        self,
        message: str,
        *,
        blockers: list[tuple[int, str, float | None]] | None = None,
        **context: Any,
    ) -> None:
        super().__init__(message, **context)
        self.blockers = list(blockers or [])


class JobValidationError(ConfigError):
    """A job, source or target failed validation.

    Attributes:
        problems: ``(dotted key, problem)`` pairs; the key is empty for the model itself.
    """

    def __init__(
        self, message: str, *, problems: Sequence[tuple[str, str]] = (), **context: Any
    ) -> None:
        super().__init__(message, **context)
        self.problems = list(problems)


class TransformImportError(ConfigError, TransformError):
    """The transform's import path does not lead to a callable."""


class ConcurrentRunError(PgferryError, Transient):
    """Another run of the same job and partition held the lock for longer than ``lock_wait``."""


class RowLevelPipeFailure(LoadError):
    """A row in the binary stream was refused; the run falls back to decoded rows, which can
    name the row and set it aside."""


class EmbeddedPostgresError(PgferryError, RuntimeError):
    """The embedded server is not installed, did not start, or a command against it failed."""
