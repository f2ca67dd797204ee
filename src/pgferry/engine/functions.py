"""Transforms: loading the user's function by its path and applying it to a batch.

What runs here runs inline or in a pool worker (:mod:`pgferry.engine.pool`) alike: it takes and
returns plain data (column names, tuples), so no connection, record or bound method crosses a
process.
"""

from __future__ import annotations

import logging
import operator
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from pgferry.engine.rowdicts import as_dicts
from pgferry.errors import ConfigError, TransformError, TransformImportError

__all__ = ["apply_transform", "batch_transform", "load_transform"]

log = logging.getLogger("pgferry")

F = TypeVar("F", bound=Callable[..., Any])
Rows = list[tuple[Any, ...]]
Columns = tuple[str, ...]

_BATCH_ATTR = "__pgferry_batch_transform__"


def batch_transform(fn: F) -> F:
    """Mark ``fn`` as a batch transform: it takes a list of rows and returns a list of rows.

    Rows are dicts (column name to value), as for row transforms. A batch transform pays the
    Python call overhead once per batch and may use vectorised code.
    """
    setattr(fn, _BATCH_ATTR, True)
    return fn


def is_batch_transform(fn: Callable[..., Any]) -> bool:
    """True if ``fn`` was marked with :func:`batch_transform`."""
    return bool(getattr(fn, _BATCH_ATTR, False))


def load_transform(spec: str | Callable[..., Any]) -> Callable[..., Any]:
    """Resolve ``package.module:function`` (or return a callable as it is).

    Raises:
        TransformImportError: The module cannot be imported or has no such callable; the
            message names the path and the cause.
    """
    if callable(spec):
        return spec
    module_name, _, attr_path = spec.partition(":")
    try:
        obj: object = pkgutil.resolve_name(spec)
    except AttributeError as exc:
        raise TransformImportError(
            f"module {module_name!r} has no attribute {attr_path!r} (transform {spec!r})"
        ) from exc
    except Exception as exc:  # the module's own import failed: ImportError, SyntaxError…
        raise TransformImportError(
            f"cannot import transform module {module_name!r} (from {spec!r}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not callable(obj):
        raise TransformImportError(f"transform {spec!r} is a {type(obj).__name__}, not callable")
    return obj


def import_path_of(fn: Callable[..., Any]) -> str | None:
    """The ``module:qualname`` path that imports ``fn`` again in another process, if any."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        return None
    try:
        found = load_transform(f"{module}:{qualname}")
    except ConfigError:
        return None
    return f"{module}:{qualname}" if found is fn else None


def _describe_row(row: Mapping[str, Any], index: int, key: Sequence[str] | None) -> str:
    # Only key values are shown: other columns may hold personal data that must not reach logs.
    if key:
        return ", ".join(f"{k}={row.get(k)!r}" for k in key)
    return f"row {index} of the batch; set source.key to name rows by their key"


TransformReject = tuple[str, str, dict[str, Any]]
"""A row the transform failed on: ``(error class, message, the input row)``."""


def apply_transform(
    fn: Callable[..., Any],
    is_batch: bool,
    columns: Columns,
    rows: Sequence[Sequence[Any]],
    key: Sequence[str] | None = None,
    rejects: list[TransformReject] | None = None,
) -> tuple[Columns | None, Rows]:
    """Run a transform over one batch.

    Args:
        fn: The user's function.
        is_batch: Whether ``fn`` is a batch transform.
        columns: Input column names.
        rows: Input rows as sequences in ``columns`` order.
        key: Key columns, to name the failing row in error messages.
        rejects: If given, rows whose transform raises are appended here instead of failing
            the batch (a batch transform is retried on halves to isolate them).

    Returns:
        The output column names (``None`` when every row was dropped) and the output rows as
        tuples in that order.

    Raises:
        TransformError: The function raised or returned something that is not a row.
    """
    if is_batch:
        dicts = as_dicts(columns, rows)
        try:
            produced = fn(dicts) if rejects is None else _batch_isolating(fn, dicts, rejects)
        except Exception as exc:
            raise TransformError(
                f"batch transform {_name(fn)} raised {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(produced, list | tuple):
            raise TransformError(
                f"batch transform {_name(fn)} returned {type(produced).__name__}; "
                "expected a list of rows"
            )
        del dicts
        results = list(produced)
        return _as_tuples(fn, results, None) if results else (None, [])
    # Row by row, a chunk at a time: the input dicts and the output mappings of one chunk
    # exist at once, not those of the whole batch (a third of a pipeline's memory otherwise).
    out_cols: Columns | None = None
    out_rows: Rows = []
    for offset in range(0, len(rows), _CHUNK):
        chunk = as_dicts(columns, rows[offset : offset + _CHUNK])
        results = _call_per_row(fn, chunk, offset, key, rejects)
        del chunk
        if results:
            out_cols, tuples = _as_tuples(fn, results, out_cols)
            out_rows += tuples
    return out_cols, out_rows


_CHUNK = 1_000


def _call_per_row(
    fn: Callable[..., Any],
    dicts: list[dict[str, Any]],
    offset: int,
    key: Sequence[str] | None,
    rejects: list[TransformReject] | None,
) -> list[Any]:
    """``fn`` on every row (``offset``: index of the first in the batch, for messages)."""
    results: list[Any] = []
    start = 0
    while start < len(dicts):
        # list.extend keeps what it appended before an exception, so the failing row is the
        # next one: the loop runs in C and still knows which row raised.
        done = len(results)
        try:
            results.extend(map(fn, dicts[start:] if start else dicts))
            break
        except Exception as exc:
            index = start + len(results) - done
            row = dicts[index]
            if rejects is None:
                raise TransformError(
                    f"transform {_name(fn)} raised {type(exc).__name__}: {exc} "
                    f"(at {_describe_row(row, offset + index, key)})"
                ) from exc
            rejects.append((type(exc).__name__, str(exc), row))
            start = index + 1
    return results


def _flatten(results: list[Any]) -> list[Any]:
    """Drop ``None`` results, spread out list and tuple results (fan-out)."""
    out: list[Any] = []
    append, extend = out.append, out.extend
    for res in results:
        if res is None:
            continue
        if isinstance(res, list | tuple):
            extend(res)
        else:
            append(res)
    return out


def _as_tuples(
    fn: Callable[..., Any], results: list[Any], out_cols: Columns | None
) -> tuple[Columns | None, Rows]:
    """Output rows as tuples in ``out_cols`` order (default: the first row's keys).

    ``results`` are the transform's results, one per input row for a row transform: ``None``
    and lists are dropped and spread out here.
    """
    first = results[0]
    if out_cols is None and type(first) is dict:
        out_cols = tuple(first)
    if out_cols is not None and len(out_cols) > 1:
        # The common case: a plain dict per row, with as many keys as the first. Values are
        # taken by name (a row whose keys come in another order still lands in the right
        # columns); anything else (None, a list, a missing name) raises and takes the
        # general loop below, which says what is wrong.
        try:
            if set(map(len, results)) == {len(out_cols)}:
                return out_cols, list(map(operator.itemgetter(*out_cols), results))
        except (TypeError, KeyError):
            pass
    results = _flatten(results)
    if not results:
        return out_cols, []
    if out_cols is None:
        first = results[0]
        if not isinstance(first, Mapping):
            raise TransformError(
                f"transform {_name(fn)} returned {type(first).__name__}; expected a mapping "
                "(column name to value), None, or a list of mappings"
            )
        out_cols = tuple(first.keys())
    width = len(out_cols)
    out_rows: Rows = []
    for res in results:
        if not isinstance(res, Mapping) or len(res) != width:
            _raise_shape(fn, res, out_cols)
        try:
            out_rows.append(tuple([res[c] for c in out_cols]))
        except KeyError:
            _raise_shape(fn, res, out_cols)
    return out_cols, out_rows


def _batch_isolating(
    fn: Callable[..., Any], rows: list[dict[str, Any]], rejects: list[TransformReject]
) -> list[Any]:
    """Call a batch transform; when it raises, call it on halves to set the bad rows aside."""
    try:
        return list(fn([dict(r) for r in rows]) if len(rows) > 1 else fn(rows))
    except Exception as exc:
        if len(rows) == 1:
            rejects.append((type(exc).__name__, str(exc), rows[0]))
            return []
        mid = len(rows) // 2
        return _batch_isolating(fn, rows[:mid], rejects) + _batch_isolating(fn, rows[mid:], rejects)


def _raise_shape(fn: Callable[..., Any], res: Any, out_cols: Columns) -> None:
    if not isinstance(res, Mapping):
        raise TransformError(f"transform {_name(fn)} returned {type(res).__name__} in a batch")
    extra = [k for k in res if k not in out_cols]
    missing = [c for c in out_cols if c not in res]
    raise TransformError(
        f"transform {_name(fn)} returned rows with different columns: "
        + "; ".join(
            part
            for part in (
                f"unexpected {', '.join(map(repr, extra))}" if extra else "",
                f"missing {', '.join(map(repr, missing))}" if missing else "",
            )
            if part
        ),
        column=(extra or missing or [None])[0],
    )


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
