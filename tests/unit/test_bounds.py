"""pgferry.engine.bounds: a batch read with the array-bounds probe, checked and stripped."""

from __future__ import annotations

import pytest

from pgferry.engine.bounds import strip_probe
from pgferry.errors import ExtractError


def test_rows_without_bounded_arrays_lose_only_the_probe() -> None:
    rows = [(1, [1, 2], None), (2, None, None), (3, [], None)]
    assert strip_probe(rows, ["a"], job="j", batch=4) == [(1, [1, 2]), (2, None), (3, [])]


def test_a_bounded_array_is_refused_by_name_batch_and_dimensions() -> None:
    rows = [(1, [1], [2], None), (2, [1], [2, 3], "1 [1:1][0:1]"), (3, [1], [2], "0 [0:0]")]
    with pytest.raises(ExtractError) as info:
        strip_probe(rows, ["a", 'b "c"'], job="j", batch=4)
    error = info.value
    assert (error.job, error.stage, error.batch, error.column) == ("j", "extract", 4, 'b "c"')
    assert "numbered [1:1][0:1] (row 2 of the batch)" in error.message
    assert '"b ""c"""[:]' in error.message  # the way out, with the name quoted for SQL
