"""pgferry.result: RunResult serialisation and stage timing."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import time
import uuid
from typing import Any

import pytest

from pgferry import result as result_module
from pgferry.result import RunResult, StageStats

UTC = dt.UTC


class _FakeClock:
    """A stand-in for the time module whose perf_counter returns the given readings."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def perf_counter(self) -> float:
        return self.readings.pop(0)


def test_busy_counts_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(result_module, "time", _FakeClock(10.0, 12.5, 20.0, 20.25))
    stats = StageStats()
    with stats.busy():
        pass
    with stats.busy():
        pass
    assert stats.busy_s == pytest.approx(2.75)
    assert stats.wait_s == 0.0


def test_waiting_counts_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(result_module, "time", _FakeClock(1.0, 1.5))
    stats = StageStats(busy_s=3.0)
    with stats.waiting():
        pass
    assert stats.wait_s == pytest.approx(0.5)
    assert stats.busy_s == 3.0


def test_time_is_counted_when_the_block_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(result_module, "time", _FakeClock(0.0, 4.0, 5.0, 6.0))
    stats = StageStats()
    with pytest.raises(RuntimeError), stats.busy():
        raise RuntimeError("boom")
    with pytest.raises(KeyError), stats.waiting():
        raise KeyError("k")
    assert stats.busy_s == pytest.approx(4.0)
    assert stats.wait_s == pytest.approx(1.0)


def test_real_clock() -> None:
    stats = StageStats()
    with stats.busy():
        time.sleep(0.02)
    with stats.waiting():
        pass
    assert 0.015 <= stats.busy_s < 2.0
    assert 0.0 <= stats.wait_s < stats.busy_s


def test_defaults() -> None:
    res = RunResult(job="j")
    assert res.status == "running"
    assert set(res.stages) == {"extract", "transform", "load"}
    assert all(s == StageStats() for s in res.stages.values())
    assert str(uuid.UUID(res.run_id)) == res.run_id
    assert RunResult(job="j").run_id != res.run_id
    # Every result has its own stage objects.
    assert RunResult(job="j").stages["load"] is not res.stages["load"]


def test_rows_per_second() -> None:
    assert RunResult(job="j", rows_written=500, duration_s=2.0).rows_per_second == 250.0
    assert RunResult(job="j", rows_written=500, duration_s=0.0).rows_per_second == 0.0


WATERMARKS: list[tuple[Any, Any]] = [
    (None, None),
    (42, 42),
    ("2024-01-01", "2024-01-01"),
    (
        dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        "2024-05-06T07:08:09.123456+00:00",
    ),
    (dt.datetime(2024, 5, 6, 7, 8, 9), "2024-05-06T07:08:09"),
    (dt.date(2024, 5, 6), "2024-05-06"),
    (dt.time(7, 8, 9), "07:08:09"),
    (decimal.Decimal("12345678901234567890.0000000001"), "12345678901234567890.0000000001"),
    (
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "12345678-1234-5678-1234-567812345678",
    ),
    (
        (dt.datetime(2024, 1, 1, tzinfo=UTC), decimal.Decimal("1.5")),
        ["2024-01-01T00:00:00+00:00", "1.5"],
    ),
    (
        {"at": dt.date(2024, 1, 2), "key": [uuid.UUID(int=1)]},
        {"at": "2024-01-02", "key": ["00000000-0000-0000-0000-000000000001"]},
    ),
]


@pytest.mark.parametrize(("watermark", "expected"), WATERMARKS)
def test_to_dict_watermarks_are_json_serialisable(watermark: Any, expected: Any) -> None:
    res = RunResult(job="j", watermark_before=watermark, watermark_after=watermark)
    data = res.to_dict()
    assert data["watermark_before"] == expected
    assert data["watermark_after"] == expected
    assert json.loads(json.dumps(data)) == json.loads(res.to_json())
    assert json.loads(res.to_json())["watermark_after"] == expected


def test_to_dict_contents() -> None:
    res = RunResult(
        job="orders",
        run_id="r1",
        status="success",
        mode="replace",
        path="pipe",
        workers=3,
        rows_read=10,
        rows_written=9,
        rows_rejected=1,
        batches=2,
        bytes_written=8192,
        duration_s=1.23456789,
        started_at="2024-01-01T00:00:00+00:00",
        finished_at="2024-01-01T00:00:01+00:00",
    )
    res.stages["load"].busy_s = 0.1234567891
    res.stages["extract"].wait_s = 2.0
    data = res.to_dict()
    assert data == {
        "job": "orders",
        "run_id": "r1",
        "status": "success",
        "mode": "replace",
        "path": "pipe",
        "workers": 3,
        "rows_read": 10,
        "rows_written": 9,
        "partition": "",
        "rows_rejected": 1,
        "rows_deleted": 0,
        "batches": 2,
        "attempts": 0,
        "bytes_written": 8192,
        "duration_s": 1.234568,
        "started_at": "2024-01-01T00:00:00+00:00",
        "finished_at": "2024-01-01T00:00:01+00:00",
        "watermark_before": None,
        "watermark_after": None,
        "stages": {
            "extract": {"busy_s": 0.0, "wait_s": 2.0},
            "transform": {"busy_s": 0.0, "wait_s": 0.0},
            "load": {"busy_s": 0.123457, "wait_s": 0.0},
        },
        "error": None,
        "run_key": None,
        "committed_by": None,
        "schema_changes": [],
    }
    # to_dict does not change the result itself.
    assert res.stages["load"].busy_s == 0.1234567891
    assert res.duration_s == 1.23456789


def test_to_json_passes_options_through() -> None:
    res = RunResult(job="j", error="boom [stage load]")
    text = res.to_json(sort_keys=True, indent=2)
    assert text.startswith("{\n")
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert json.loads(text)["error"] == "boom [stage load]"
