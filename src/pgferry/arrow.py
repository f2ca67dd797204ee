"""Arrow and Polars transforms: the decorators, the optional dependencies, and the types the
columnar lane carries exactly.

A function marked with :func:`arrow_transform` takes a ``pyarrow.RecordBatch`` and returns a
``pyarrow.RecordBatch`` or ``pyarrow.Table``; one marked with :func:`polars_transform` takes a
``polars.DataFrame`` and returns one. Either makes a run take the columnar lane
(:mod:`pgferry.engine.lanes.columnar`): batches are read as Arrow by ADBC's PostgreSQL driver
(which decodes binary COPY in C++), handed to the function whole, encoded back to binary COPY by
pgpq and streamed into the target with asyncpg. No row is a Python object on the way.

How each column travels (decided from its PostgreSQL type before any row moves):

* **native**: integers, ``real``/``double precision``, ``boolean``, ``text``/``varchar``/
  ``char(n)``/``name``, ``bytea``, ``json``/``jsonb`` (as strings: the server's text), ``uuid``
  (16 bytes), ``date``, ``timestamp``, ``timestamptz``, ``time`` and ``money`` (an ``int64`` of
  cents, its binary form) arrive as the matching Arrow type and are encoded straight back.
  (For a Polars transform ``time`` travels as text: Polars' ``Time`` has no ``24:00:00``.)
  ``±infinity`` dates and timestamps have no Arrow value: a batch holding one is refused with an
  error naming the column (cast it to text in a source query to carry it).
* **text**: every other type (``numeric``, ``interval``, arrays, ranges, ``xml``, composites,
  enums, geometric and network types…) is read as PostgreSQL's own text output (``col::text``,
  exact for every type) and written through a staging table with a cast back
  (``text::numeric``…), exact again. ``numeric`` therefore never goes through a float, interval
  months stay months and arrays keep their NULLs and dimensions.

Columns the transform returns are matched to the target by name; a value of an Arrow type that
cannot be written exactly to its column is refused up front with an error naming it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pgferry.errors import ConfigError

__all__ = [
    "MissingDependencyError",
    "arrow_transform",
    "carried_as_text",
    "columnar_kind",
    "polars_transform",
    "require",
    "transform_kind",
]

F = TypeVar("F", bound=Callable[..., Any])
Kind = Literal["arrow", "polars"]

_KIND_ATTR = "__pgferry_columnar__"


def arrow_transform(fn: F) -> F:
    """Mark ``fn`` as an Arrow transform: ``pyarrow.RecordBatch`` in, ``RecordBatch`` or
    ``Table`` out.

    The run reads, transforms and writes whole Arrow batches (``pgferry[arrow]``). Columns are
    matched to the target by name.
    """
    setattr(fn, _KIND_ATTR, "arrow")
    return fn


def polars_transform(fn: F) -> F:
    """Mark ``fn`` as a Polars transform: ``polars.DataFrame`` in, ``polars.DataFrame`` out
    (``pgferry[polars]``)."""
    setattr(fn, _KIND_ATTR, "polars")
    return fn


def transform_kind(fn: Any) -> Kind | None:
    """``arrow`` or ``polars`` for a function marked by the decorators, else ``None``."""
    kind = getattr(fn, _KIND_ATTR, None)
    return kind if kind in ("arrow", "polars") else None


def columnar_kind(transform: str | Callable[..., Any] | None) -> Kind | None:
    """The columnar kind of a job's transform (``None``: the rows lane or the pipe).

    Raises:
        TransformImportError: The import path does not lead to a callable.
    """
    if transform is None:
        return None
    from pgferry.engine.functions import load_transform

    return transform_kind(load_transform(transform))


class MissingDependencyError(ConfigError):
    """An optional dependency of the columnar lane is not installed."""


_NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "arrow": (
        ("pyarrow", "pyarrow"),
        ("pgpq", "pgpq"),
        # The driver's low-level modules: its ``dbapi`` module imports Polars and
        # ``pyarrow.dataset`` (≈ 40 MiB resident for nothing on the Arrow lane).
        ("adbc_driver_manager", "adbc-driver-manager"),
        ("adbc_driver_postgresql", "adbc-driver-postgresql"),
    ),
}
_NEEDS["polars"] = (*_NEEDS["arrow"], ("polars", "polars"))


def require(kind: Kind, *, job: str | None = None) -> None:
    """Import what the lane of ``kind`` needs, or say which extra installs it.

    Raises:
        MissingDependencyError: A package is missing; the message names the extra.
    """
    for module, package in _NEEDS[kind]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingDependencyError(
                f"an {kind} transform needs the package {package!r}, which is not installed: "
                f"pip install 'pgferry[{kind}]'",
                job=job,
            ) from exc


# --- Types ------------------------------------------------------------------------------------

_TYPMOD = re.compile(r"\(\s*\d+(\s*,\s*\d+)?\s*\)")

# PostgreSQL type (format_type text without its modifier) → what the lane reads it as.
NATIVE: frozenset[str] = frozenset(
    {
        "smallint",
        "integer",
        "bigint",
        "real",
        "double precision",
        "boolean",
        "text",
        "character varying",
        "character",
        "name",
        "bytea",
        "json",
        "jsonb",
        "uuid",
        "date",
        "timestamp without time zone",
        "timestamp with time zone",
        "time without time zone",
        "money",
    }
)
TEXTUAL: frozenset[str] = frozenset({"text", "character varying", "character", "name", "json"})


def base_type(type_name: str) -> str:
    """``format_type`` text without its modifier: ``numeric(10,2)`` → ``numeric``."""
    return _TYPMOD.sub("", type_name).strip()


# Polars' Time stops at 23:59:59.999999999: PostgreSQL's 24:00:00 would become null.
_NOT_IN_POLARS = frozenset({"time without time zone"})


def carried_as_text(type_name: str, kind: Kind = "arrow") -> bool:
    """Whether a column of this type travels as its text output (see the module docstring)."""
    base = base_type(type_name)
    return base not in NATIVE or (kind == "polars" and base in _NOT_IN_POLARS)
