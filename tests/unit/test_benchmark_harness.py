"""The pure parts of the throughput benchmark (``benchmarks/``): no database, no subprocess.

The end-to-end check is ``python -m benchmarks.run --rows 2000 --rounds 1``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from importlib import resources
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `pytest` alone does not put the repository root on sys.path
    sys.path.insert(0, str(REPO))

from benchmarks import report, workload  # noqa: E402
from benchmarks.methods import METHODS, MethodConfig, parse_methods  # noqa: E402
from benchmarks.report import MethodSummary, RunRecord  # noqa: E402
from benchmarks.run import round_orders  # noqa: E402

from pgferry import demo  # noqa: E402

WORKLOAD = """\
-- A comment line
\\if :{?rows}
\\else
  \\set rows 1000000
\\endif
DROP TABLE IF EXISTS t;
INSERT INTO t SELECT g FROM generate_series(1, :rows) AS g;
VACUUM (FREEZE, ANALYZE) t;
-- the view
CREATE OR REPLACE VIEW bench_expected AS
SELECT id,
       split_part(name, ' ', 1) AS first_name
FROM t;
"""


# --- Workload ---------------------------------------------------------------------------------


def test_parse_workload_fills_rows_and_drops_meta_commands_and_comments() -> None:
    statements = workload.parse_workload(WORKLOAD, 123)
    assert statements == [
        "DROP TABLE IF EXISTS t",
        "INSERT INTO t SELECT g FROM generate_series(1, 123) AS g",
        "VACUUM (FREEZE, ANALYZE) t",
        "CREATE OR REPLACE VIEW bench_expected AS\n"
        "SELECT id,\n       split_part(name, ' ', 1) AS first_name\nFROM t",
    ]


@pytest.mark.parametrize("rows", [0, -1, 1.5, "10; DROP TABLE x", True])
def test_parse_workload_rejects_a_bad_row_count(rows: object) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        workload.parse_workload(WORKLOAD, rows)  # type: ignore[arg-type]


def test_parse_workload_reads_the_packaged_workload_as_pgferry_does() -> None:
    text = resources.files("pgferry").joinpath("workload.sql").read_text(encoding="utf-8")
    assert workload.parse_workload(text, 777) == demo.workload_statements(777)


def test_workload_statements_prefer_the_shared_file() -> None:
    statements, origin = workload.workload_statements(10)
    shared = workload.SHARED_BENCH / "workload.sql"
    if shared.is_file():
        assert origin == str(shared)
    else:
        assert origin == "pgferry.demo"
    assert any("generate_series(1, 10)" in s for s in statements)


def test_transform_select_is_the_body_of_the_expected_view() -> None:
    select = workload.transform_select(workload.parse_workload(WORKLOAD, 5))
    assert select == "SELECT id,\n       split_part(name, ' ', 1) AS first_name\nFROM t"
    real = workload.transform_select(workload.workload_statements(5)[0])
    assert real.startswith("SELECT id,")
    assert "split_part(name, ' ', 1)" in real
    assert real.endswith("FROM bench_src")


def test_transform_select_without_the_view() -> None:
    with pytest.raises(ValueError, match="bench_expected"):
        workload.transform_select(["SELECT 1"])


ROWS = [
    {
        "id": 1,
        "name": name,
        "age": 30,
        "email": email,
        "created_at": when,
        "score": 1.5,
        "payload": '{"n": 1}',
    }
    for name, email, when in [
        ("Mary Ann Smith", "a@example.com", dt.datetime(2020, 1, 1, tzinfo=dt.UTC)),
        ("Zoë Müller", None, dt.datetime(2021, 6, 1, 12, tzinfo=dt.UTC)),
        ("José van der Berg", "j@example.com", dt.datetime(2020, 1, 1, tzinfo=dt.UTC)),
        ("Single", None, dt.datetime(2020, 1, 1, tzinfo=dt.UTC)),
    ]
]


def test_pgferry_demo_split_name_is_the_shared_transform() -> None:
    # Methods (c)/(d) run the shared transform.py, (f)/(g) pgferry.demo's copy: they must agree.
    shared = workload.load_split_name(workload.transform_file())
    for row in ROWS:
        assert shared(dict(row)) == demo.split_name(dict(row))
        assert list(shared(dict(row))) == list(demo.split_name(dict(row)))
    assert demo.split_name_batch([dict(r) for r in ROWS]) == [demo.split_name(r) for r in ROWS]


def test_load_split_name_without_the_shared_file_is_pgferrys() -> None:
    assert workload.load_split_name(None) is demo.split_name


# --- Methods and rounds -----------------------------------------------------------------------


def test_methods_a_to_i_resolve_to_functions() -> None:
    assert list(METHODS) == list("abcdefghi")
    for method in METHODS.values():
        assert callable(method.load())
    assert [m.key for m in METHODS.values() if m.baseline] == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "keys"),
    [("a,b,f", ["a", "b", "f"]), ("FBA", ["f", "b", "a"]), (" c , d ", ["c", "d"])],
)
def test_parse_methods(text: str, keys: list[str]) -> None:
    assert parse_methods(text) == keys


@pytest.mark.parametrize(("text", "message"), [("a,z", "unknown"), ("a,a", "twice"), (",", "no")])
def test_parse_methods_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_methods(text)


def test_rounds_alternate_direction() -> None:
    assert round_orders(["a", "b", "c"], 3) == [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]
    assert round_orders(["a"], 1) == [["a"]]


def test_method_config_from_json() -> None:
    data = {
        "method": "c",
        "dsn": "postgresql://h/db",
        "database": "db",
        "rows": 5,
        "transform_sql": "SELECT 1",
        "source_sql": "SELECT 2",
        "target_columns": ["id", "x"],
        "transform_file": None,
    }
    config = MethodConfig.from_dict(json.loads(json.dumps(data)))
    assert config.target_columns == ("id", "x")
    assert config.batch_size == 10_000


# --- Medians, ratios, summaries ---------------------------------------------------------------


def test_median_and_ratio() -> None:
    assert report.median([3.0, 1.0, 2.0]) == 2.0
    assert report.median([4.0, 1.0, None, 2.0, 3.0]) == 2.5
    assert report.median([None]) is None
    assert report.median([]) is None
    assert report.ratio(3.0, 1.5) == 2.0
    assert report.ratio(None, 1.0) is None
    assert report.ratio(1.0, None) is None
    assert report.ratio(1.0, 0.0) is None


def _run(method: str, rnd: int, wall: float, **kw: object) -> RunRecord:
    defaults: dict[str, object] = {
        "transfer_s": wall / 2,
        "user_s": wall / 4,
        "sys_s": wall / 4,
        "server_cpu_s": wall,
        "peak_tree_rss": int(wall * 10 * report.MIB),
        "maxrss": 20 * report.MIB,
        "verified": True,
    }
    defaults.update(kw)
    return RunRecord(method=method, round=rnd, wall_s=wall, **defaults)  # type: ignore[arg-type]


LABELS = {"a": "insert", "b": "pipe", "f": "pgferry row"}
RECORDS = [
    _run("a", 1, 1.0),
    _run("b", 1, 2.0),
    _run("f", 1, 5.0),
    _run("f", 2, 4.0),
    _run("b", 2, 2.2),
    _run("a", 2, 0.8),
    _run("a", 3, 0.9),
    _run("b", 3, 1.8),
    _run("f", 3, 6.0),
]


def test_summarise_medians_ratios_and_per_row_figures() -> None:
    by_key = {s.key: s for s in report.summarise(RECORDS, LABELS, rows=1000)}
    assert list(by_key) == ["a", "b", "f"]
    a, b, f = by_key["a"], by_key["b"], by_key["f"]
    assert (a.median_s, b.median_s, f.median_s) == (0.9, 2.0, 5.0)
    assert b.x_pipe == 1.0
    assert f.x_pipe == pytest.approx(2.5)
    assert f.x_insert == pytest.approx(5.0 / 0.9)
    assert a.x_pipe == pytest.approx(0.45)
    assert f.rows_per_s == pytest.approx(200.0)
    assert f.transfer_s == 2.5
    assert f.transfer_x_pipe == pytest.approx(2.5)
    # (user + sys) / rows in µs: wall/2 seconds per run, median over runs.
    assert f.client_us_per_row == pytest.approx(2500.0)
    assert f.server_us_per_row == pytest.approx(5000.0)
    assert f.peak_rss_mib == pytest.approx(60.0)  # the highest peak, not the median
    assert f.wall_s == [5.0, 4.0, 6.0]
    assert (f.status, f.verified_text) == ("ok", "ok 3/3")


def test_a_wrong_run_is_not_counted_and_flags_the_method() -> None:
    records = [*RECORDS[:-1], _run("f", 3, 0.1, verified=False, verification="WRONG")]
    f = {s.key: s for s in report.summarise(records, LABELS, rows=1000)}["f"]
    assert f.median_s == 4.5  # the wrong (and fast) run is left out
    assert (f.good, f.wrong, f.failed) == (2, 1, 0)
    assert (f.status, f.verified_text) == ("WRONG", "WRONG 1/3")


def test_a_failed_run_flags_the_method_and_missing_baselines_give_no_ratio() -> None:
    records = [_run("f", 1, 3.0, verified=None, error="exit 1: boom")]
    (f,) = report.summarise(records, LABELS, rows=10)
    assert (f.status, f.verified_text) == ("FAILED", "FAILED 1/1")
    assert f.median_s is None and f.rows_per_s is None and f.x_pipe is None


def test_server_cpu_not_measurable_is_none() -> None:
    records = [_run("b", 1, 2.0, server_cpu_s=None), _run("b", 2, 2.0, server_cpu_s=None)]
    (b,) = report.summarise(records, LABELS, rows=10)
    assert b.server_us_per_row is None


# --- Formatting and the report ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "n/a"),
        (123.456, "123.5"),
        (12.345, "12.35"),
        (1.0, "1.00"),
        (0.1234, "0.123"),
        (0.9999, "1.00"),
    ],
)
def test_fmt_seconds(value: float | None, text: str) -> None:
    assert report.fmt_seconds(value) == text


def test_other_formats() -> None:
    assert report.fmt_rate(162_345.6) == "162,000"
    assert report.fmt_rate(987.4) == "987"
    assert report.fmt_rate(None) == "n/a"
    assert report.fmt_ratio(2.3333) == "2.33\N{MULTIPLICATION SIGN}"
    assert report.fmt_ratio(None) == "n/a"
    assert report.fmt_us(10.7) == "10.7"
    assert report.fmt_us(9.9999) == "10.0"
    assert report.fmt_us(1.72) == "1.72"
    assert report.fmt_us(0.04) == "0.04"
    assert report.fmt_mib(27.6) == "28"
    assert report.fmt_mib(None) == "n/a"


def _summaries() -> list[MethodSummary]:
    records = [*RECORDS, _run("f", 4, 0.1, verified=False, verification="WRONG: 9 rows")]
    return report.summarise(records, LABELS, rows=1000)


META = {
    "command": "python -m benchmarks.run --rows 1000",
    "date": "2026-01-01 00:00 UTC",
    "rows": 1000,
    "rounds": 3,
    "pgferry": "0.1.0",
    "git": "git abc1234",
    "machine": {"CPU": "Test CPU", "cores": "2"},
    "server": {
        "server_version": "18.6",
        "kind": "embedded",
        "settings": {"fsync": "on"},
        "postmaster_pid": 42,
    },
    "workload": "../shared/bench/workload.sql",
    "transform": "../shared/bench/transform.py",
}


def test_results_table() -> None:
    table = report.results_table(_summaries()).splitlines()
    assert table[0].startswith("| method | median s | rows/s | \N{MULTIPLICATION SIGN} pipe |")
    assert table[0].endswith("| peak RSS MiB | verified |")
    assert table[1] == "|---|---|---|---|---|---|---|---|---|"
    assert table[2] == (
        "| (a) insert | 0.900 | 1,110 | 0.45\N{MULTIPLICATION SIGN} | 1.00\N{MULTIPLICATION SIGN} "
        "| 450.0 | 900.0 | 10 | ok 3/3 |"
    )
    assert table[4].endswith("| **WRONG 1/4** |")
    assert all(line.count("|") == 10 for line in table)


def test_render_markdown_has_the_command_machine_and_problems() -> None:
    text = report.render_markdown(META, _summaries(), ["(f) round 4: WRONG: 9 rows"])
    assert "`python -m benchmarks.run --rows 1000`" in text
    assert "1,000 rows of the standard workload, 3 alternating round(s)" in text
    assert "## Problems\n\n- (f) round 4: WRONG: 9 rows" in text
    assert "- CPU: Test CPU" in text
    assert "- PostgreSQL: 18.6 (embedded)" in text
    assert "fsync = on" in text
    assert "| f | 5.00, 4.00, 6.00, 0.100 | 2.50 | 2.50\N{MULTIPLICATION SIGN} | 20 |" in text


def test_json_and_files(tmp_path: Path) -> None:
    summaries = _summaries()
    data = report.to_json(META, summaries, RECORDS, ["bad"])
    assert data["ok"] is False
    assert [m["key"] for m in data["methods"]] == ["a", "b", "f"]
    assert data["methods"][0]["status"] == "ok"
    assert len(data["methods"][0]["runs_detail"]) == 3
    md, js = report.write_results(tmp_path / "out", "# hello\n", data)
    assert md.read_text(encoding="utf-8") == "# hello\n"
    assert json.loads(js.read_text(encoding="utf-8"))["problems"] == ["bad"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["latest.json", "latest.md"]
    clean = report.to_json(META, report.summarise(RECORDS, LABELS, rows=1000), RECORDS)
    assert clean["ok"] is True


def test_describe_detail() -> None:
    assert report.describe_detail({}) == ""
    assert report.describe_detail({"batches": 5, "batch_size": 10000}) == (
        "5 batches of 10000 rows"
    )
    assert (
        report.describe_detail(
            {
                "batches": 3,
                "mean_batch": 12.5,
                "max_batch": 20,
                "pool_workers": 2,
                "start_method": "fork",
            }
        )
        == "3 batches (mean 12.5, max 20 rows), 2 workers (fork)"
    )
    note = report.describe_detail(
        {
            "path": "rows",
            "workers": 0,
            "batches": 4,
            "stages": {"extract": {"busy_s": 1.234, "wait_s": 0.1}, "load": {"busy_s": 0.0}},
        }
    )
    assert note == "pgferry rows path, 0 pool workers, 4 batches; busy s: extract 1.23"
    assert report.describe_detail({"path": "pipe", "stages": {}}) == "pgferry pipe path"


def test_describe_detail_of_parallel_pipelines() -> None:
    note = report.describe_detail(
        {"path": "rows", "workers": 2, "pipelines": 2, "batches": 200, "stages": {}}
    )
    assert note == "pgferry rows path, 2 parallel pipelines, 200 batches"
    # A pool of two, in one pipeline, stays a pool.
    note = report.describe_detail(
        {"path": "rows", "workers": 2, "pipelines": 1, "batches": 100, "stages": {}}
    )
    assert note == "pgferry rows path, 2 pool workers, 100 batches"


def test_ferry_method_reports_how_pgferry_chose_to_run() -> None:
    import logging

    from benchmarks.methods import ferry

    decisions = ferry._Decisions()
    for message in (
        "job j: 2 pipelines over ranges of id (transform 4.2 µs/row incl. decoding, 2 cores)",
        "created target table x",
    ):
        decisions.emit(logging.LogRecord("pgferry", logging.INFO, "", 0, message, None, None))
    assert decisions.parallel is True
    assert decisions.messages == [
        "job j: 2 pipelines over ranges of id (transform 4.2 µs/row incl. decoding, 2 cores)"
    ]
