"""SQL text of the rows lane's array-bounds check (:mod:`pgferry.engine.bounds`).

Like :mod:`pgferry.sql`, whose ``quote_ident`` quotes every identifier here.
"""

from __future__ import annotations

from collections.abc import Sequence

from pgferry.sql import quote_ident

__all__ = ["PROBE_COLUMN", "array_bounds_probe"]

PROBE_COLUMN = "pgferry: array bounds"
"""Name of the column :func:`array_bounds_probe` adds (no source column is named so)."""


def array_bounds_probe(columns: Sequence[str]) -> str:
    """A select item naming, for one row, the first array in ``columns`` not numbered from 1.

    ``CASE WHEN strpos(replace(array_dims("a"), '[1:', ''), '[') > 0 THEN '0 ' ||
    array_dims("a") WHEN … END AS "pgferry: array bounds"``: ``array_dims`` prints
    ``[lower:upper]`` per dimension, so a ``[`` left after removing every ``[1:`` is a dimension
    whose lower bound is not 1. The value is the column's index in ``columns``, a space and its
    dimensions (``'0 [0:2]'``), or NULL when every array starts at 1 (or is NULL or empty).
    """
    whens = " ".join(
        f"WHEN strpos(replace(array_dims({quote_ident(c)}), '[1:', ''), '[') > 0 "
        f"THEN '{i} ' || array_dims({quote_ident(c)})"
        for i, c in enumerate(columns)
    )
    return f"CASE {whens} END AS {quote_ident(PROBE_COLUMN)}"
