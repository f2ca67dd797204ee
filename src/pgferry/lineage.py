"""Column lineage: which source columns each target column comes from.

The rules, shared by the Airflow (OpenLineage) and Dagster (``dagster/column_lineage``)
integrations, follow what pgferry knows rather than what it could guess:

* without a transform, every target column that the source also has maps 1:1 (``identity``);
* with a transform, a column the transform declares maps to the source columns it declares
  (``declared``); a column with a source column of the same name maps to it (``same-name``);
  any other column the transform created maps to every source column (``all``), since any of
  them may feed it.

A transform declares what it reads with :func:`column_lineage`::

    @pgferry.column_lineage(first_name=["name"], last_name=["name"])
    def clean(row): ...

The decorator only stores the mapping in the function's ``__pgferry_column_lineage__``
attribute (:data:`LINEAGE_ATTR`) and returns the same function, so the transform stays
importable by its path and runs in the process pool unchanged; it composes with
:func:`pgferry.batch_transform` in either order.

Everything here is plain data and imports neither Airflow nor Dagster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from pgferry.engine.functions import load_transform
from pgferry.errors import ConfigError

__all__ = [
    "LINEAGE_ATTR",
    "ColumnMapping",
    "Derivation",
    "column_lineage",
    "declared_lineage",
    "map_columns",
]

F = TypeVar("F", bound=Callable[..., Any])

LINEAGE_ATTR = "__pgferry_column_lineage__"
"""The function attribute holding a transform's declared lineage (set by :func:`column_lineage`):
a mapping of each output column to the source columns it is computed from."""

Derivation = Literal["identity", "same-name", "declared", "all"]
"""How a target column comes from its source columns (see :func:`map_columns`)."""

ColumnMapping = dict[str, tuple[list[str], Derivation]]
"""``{target column: (source columns, derivation)}``, as :func:`map_columns` returns it."""


def _normalize(mapping: Mapping[Any, Any], owner: str) -> dict[str, list[str]]:
    """Check a declaration and copy it to ``{column: [source columns]}``.

    A single string stands for one source column: ``"name"`` is ``["name"]``, never the
    characters ``n``, ``a``, ``m``, ``e``.
    """
    out: dict[str, list[str]] = {}
    for column, reads in mapping.items():
        if not isinstance(column, str) or not column:
            raise ConfigError(
                f"{owner}: output column names must be non-empty strings, got {column!r}"
            )
        if isinstance(reads, str):
            reads = [reads]
        if not isinstance(reads, list | tuple) or not all(isinstance(r, str) and r for r in reads):
            raise ConfigError(
                f"{owner}: column {column!r} must map to a source column name or a list of "
                f"them, got {reads!r}",
                column=column,
            )
        out[column] = list(reads)
    return out


def column_lineage(
    _fn: object = None, /, **mapping: str | list[str] | tuple[str, ...]
) -> Callable[[F], F]:
    """Declare which source columns each column a transform creates is computed from.

    ::

        @pgferry.column_lineage(first_name=["name"], last_name=["name"], domain="email")
        def clean(row): ...

    A column whose name is not a Python identifier goes through ``**``:
    ``@pgferry.column_lineage(**{"full name": ["first", "last"]})``. Columns the transform
    passes through under their source name need no declaration. Applying the decorator again
    replaces the declaration.

    Args:
        **mapping: Output column to its source columns: a list or tuple of names, or one name.

    Returns:
        A decorator that sets :data:`LINEAGE_ATTR` on the function and returns that same
        function (still importable by path, so it still runs in the process pool).

    Raises:
        ConfigError: A column maps to something other than source column names, no column is
            given, or the decorator is used without its parentheses; the message names the
            column.
    """
    if _fn is not None:
        raise ConfigError(
            "column_lineage takes the columns as keywords: "
            "@pgferry.column_lineage(new_column=['source_column'])"
        )
    if not mapping:
        raise ConfigError(
            "column_lineage() needs at least one column, e.g. "
            "@pgferry.column_lineage(new_column=['source_column'])"
        )
    declared = _normalize(mapping, "column_lineage")

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise ConfigError(f"column_lineage decorates a transform function, not {fn!r}")
        # Copied per function: one decorator object may be applied to several transforms.
        setattr(fn, LINEAGE_ATTR, {column: list(reads) for column, reads in declared.items()})
        return fn

    return decorate


def declared_lineage(transform: str | Callable[..., Any] | None) -> dict[str, list[str]] | None:
    """The column lineage a transform declares (see :func:`column_lineage`), if any.

    Args:
        transform: The transform, as ``package.module:function`` or a callable.

    Returns:
        ``{output column: [source columns]}`` (a fresh copy), or ``None`` without a transform
        or when it declares nothing.

    Raises:
        TransformImportError: The import path does not lead to a callable.
        ConfigError: The attribute, set by hand, is not a mapping of column names to source
            column names.
    """
    if transform is None:
        return None
    fn = load_transform(transform)
    declared = getattr(fn, LINEAGE_ATTR, None)
    if declared is None:
        return None
    owner = f"{LINEAGE_ATTR} of {getattr(fn, '__qualname__', fn)!s}"
    if not isinstance(declared, Mapping):
        raise ConfigError(f"{owner} must be a mapping, got {type(declared).__name__}")
    return _normalize(declared, owner)


def map_columns(
    source: Sequence[str],
    target: Sequence[str],
    *,
    transformed: bool,
    declared: Mapping[str, Sequence[str]] | None = None,
) -> ColumnMapping:
    """Map each target column to the source columns it comes from.

    Args:
        source: The columns the source (table or query) yields.
        target: The target table's columns.
        transformed: Whether a transform ran.
        declared: What the transform declares (:func:`declared_lineage`).

    Returns:
        ``{target column: (source columns, derivation)}``, the derivation being ``identity``
        (copied unchanged), ``declared`` (the transform says so; declared columns the source
        does not have are dropped), ``same-name`` (a transform ran; the source column of the
        same name) or ``all`` (created by a transform that declares nothing about it: every
        source column). Target columns this job does not feed are left out.
    """
    names = set(source)
    out: ColumnMapping = {}
    for column in target:
        if transformed and declared and column in declared:
            out[column] = ([c for c in declared[column] if c in names], "declared")
        elif column in names:
            out[column] = ([column], "same-name" if transformed else "identity")
        elif transformed:
            out[column] = (list(source), "all")
    return out
