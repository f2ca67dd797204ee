"""The pgferry exception hierarchy.

::

    PgferryError
    ├── ConfigError (also ValueError)      invalid job, file, option or argument: fix the input
    │   └── SchemaError                    source and target tables do not fit together
    ├── ConnectError                       a server could not be reached or refused the login
    ├── ExtractError                       reading the source failed
    ├── TransformError                     the user's transform failed or returned bad rows
    └── LoadError                          writing the target failed

Every error carries the job name and, where known, the stage, the batch number and the column,
and its message names them. Errors that may succeed when retried (a lost connection, a server
shutting down, a serialisation failure) also inherit :class:`Transient`; the retry logic and the
orchestrator wrappers use that marker to tell a retryable failure from a terminal one.

All errors pickle (they cross process-pool boundaries) and are raised ``from`` their cause.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "ConnectError",
    "ExtractError",
    "LoadError",
    "PgferryError",
    "SchemaError",
    "SchemaLockError",
    "TransformError",
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
    """

    default_stage: str | None = None

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


class SchemaLockError(TransientLoadError):
    """A schema change never got its table's lock within ``target.lock_timeout`` and its
    retries; the message names the sessions that held it. Nothing of the change was made.

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
