"""Medians, ratios and the report (``results/latest.md`` and ``latest.json``).

Pure functions over plain data: no database, no subprocess. A run counts towards the medians
only if it exited cleanly and its target was verified identical to ``bench_expected``; a method
with any wrong or failed run is flagged in the report and makes the benchmark exit non-zero.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MethodSummary",
    "RunRecord",
    "fmt_mib",
    "fmt_rate",
    "fmt_ratio",
    "fmt_seconds",
    "fmt_us",
    "median",
    "ratio",
    "render_markdown",
    "summarise",
    "write_results",
]

MIB = 1024 * 1024
TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass
class RunRecord:
    """One method run in one round.

    Attributes:
        method: The method's letter.
        round: 1-based round number.
        wall_s: Whole-process wall time of the child.
        transfer_s: The transfer alone, measured inside the child (``None`` if it failed).
        user_s: Client user CPU seconds (child and its pool workers).
        sys_s: Client system CPU seconds.
        server_cpu_s: Server CPU seconds, ``None`` when not measurable.
        peak_tree_rss: Peak summed RSS of the client process tree, bytes.
        maxrss: The child's own peak RSS since its start (``VmHWM``), bytes.
        ru_maxrss: The child's ``ru_maxrss``, bytes (includes the parent's size at fork).
        verified: ``True`` identical, ``False`` wrong, ``None`` not checked (the run failed).
        verification: The verification's one-line description.
        error: Why the run failed, if it did.
        detail: What the method reported (pgferry path and workers, batch sizes …).
    """

    method: str
    round: int
    wall_s: float
    transfer_s: float | None = None
    user_s: float = 0.0
    sys_s: float = 0.0
    server_cpu_s: float | None = None
    peak_tree_rss: int | None = None
    maxrss: int | None = None
    ru_maxrss: int | None = None
    verified: bool | None = None
    verification: str = ""
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def good(self) -> bool:
        """Completed and verified: the run counts towards the figures."""
        return self.error is None and self.verified is True


@dataclass
class MethodSummary:
    """The figures of one method over all rounds (medians of the good runs)."""

    key: str
    label: str
    runs: int
    good: int
    wrong: int
    failed: int
    median_s: float | None
    transfer_s: float | None
    rows_per_s: float | None
    x_pipe: float | None
    x_insert: float | None
    transfer_x_pipe: float | None
    client_us_per_row: float | None
    server_us_per_row: float | None
    peak_rss_mib: float | None
    own_maxrss_mib: float | None
    wall_s: list[float]
    notes: str = ""

    @property
    def status(self) -> str:
        """``ok``, ``WRONG`` (a run's target differed) or ``FAILED`` (a run did not finish)."""
        if self.wrong:
            return "WRONG"
        if self.failed or not self.good:
            return "FAILED"
        return "ok"

    @property
    def verified_text(self) -> str:
        """The report's "verified" cell, e.g. ``ok 3/3`` or ``WRONG 1/3``."""
        count = {"ok": self.good, "WRONG": self.wrong, "FAILED": self.failed}[self.status]
        return f"{self.status} {count}/{self.runs}"


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not ``None``; ``None`` if there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base``, or ``None`` when either is missing or the base is not positive."""
    if value is None or base is None or base <= 0:
        return None
    return value / base


def summarise(
    records: Sequence[RunRecord],
    labels: dict[str, str],
    rows: int,
    *,
    pipe: str = "b",
    insert: str = "a",
) -> list[MethodSummary]:
    """One summary per method, in the order of ``labels``; ratios against ``pipe``/``insert``.

    Per-row CPU figures are medians of (CPU seconds / rows) over the good runs; peak RSS is
    the highest peak over the good runs.
    """
    out: list[MethodSummary] = []
    for key, label in labels.items():
        runs = [r for r in records if r.method == key]
        if not runs:
            continue
        good = [r for r in runs if r.good]
        med = median(r.wall_s for r in good)
        peaks = [r.peak_tree_rss for r in good if r.peak_tree_rss is not None]
        own = [r.maxrss for r in good if r.maxrss is not None]
        out.append(
            MethodSummary(
                key=key,
                label=label,
                runs=len(runs),
                good=len(good),
                wrong=sum(1 for r in runs if r.verified is False),
                failed=sum(1 for r in runs if r.error is not None),
                median_s=med,
                transfer_s=median(r.transfer_s for r in good),
                rows_per_s=rows / med if med else None,
                x_pipe=None,
                x_insert=None,
                transfer_x_pipe=None,
                client_us_per_row=median((r.user_s + r.sys_s) / rows * 1e6 for r in good),
                server_us_per_row=median(
                    r.server_cpu_s / rows * 1e6 if r.server_cpu_s is not None else None
                    for r in good
                ),
                peak_rss_mib=max(peaks) / MIB if peaks else None,
                own_maxrss_mib=max(own) / MIB if own else None,
                wall_s=[r.wall_s for r in runs],
                notes=describe_detail(next((r.detail for r in reversed(good)), {})),
            )
        )
    medians = {s.key: s.median_s for s in out}
    transfers = {s.key: s.transfer_s for s in out}
    for s in out:
        s.x_pipe = ratio(s.median_s, medians.get(pipe))
        s.x_insert = ratio(s.median_s, medians.get(insert))
        s.transfer_x_pipe = ratio(s.transfer_s, transfers.get(pipe))
    return out


def describe_detail(detail: dict[str, Any]) -> str:
    """A short note from a method's details: pgferry's path and workers, batch sizes."""
    if "path" in detail:
        text = f"pgferry {detail['path']} path"
        if detail["path"] == "rows" and detail.get("pipelines", 1) > 1:
            text += f", {detail['pipelines']} parallel pipelines, {detail.get('batches')} batches"
        elif detail["path"] == "rows":
            text += f", {detail.get('workers', 0)} pool workers, {detail.get('batches')} batches"
        stages = detail.get("stages") or {}
        busy = {k: v.get("busy_s") for k, v in stages.items() if v.get("busy_s")}
        if busy:
            text += "; busy s: " + ", ".join(f"{k} {v:.2f}" for k, v in busy.items())
        return text
    if "mean_batch" in detail:
        return (
            f"{detail['batches']} batches (mean {detail['mean_batch']:g}, max "
            f"{detail['max_batch']} rows), {detail['pool_workers']} workers "
            f"({detail['start_method']})"
        )
    if "batches" in detail:
        return f"{detail['batches']} batches of {detail.get('batch_size')} rows"
    return ""


# --- Formatting --------------------------------------------------------------------------------


def fmt_seconds(value: float | None) -> str:
    """``12.3``, ``1.23``, ``0.123``; ``n/a`` for ``None``."""
    if value is None:
        return "n/a"
    if round(value, 2) >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}" if round(value, 3) >= 1 else f"{value:.3f}"


def fmt_rate(value: float | None) -> str:
    """Rows per second with thousands separators, to three significant figures."""
    if value is None:
        return "n/a"
    digits = max(0, len(str(int(value))) - 3)
    return f"{round(value, -digits):,.0f}"


def fmt_ratio(value: float | None) -> str:
    """``2.33`` and a multiplication sign; ``n/a`` for ``None``."""
    return "n/a" if value is None else f"{value:.2f}{TIMES}"


def fmt_us(value: float | None) -> str:
    """Microseconds per row: ``10.7``, ``1.72``, ``0.04``; ``n/a`` for ``None``."""
    if value is None:
        return "n/a"
    return f"{value:.1f}" if round(value, 2) >= 10 else f"{value:.2f}"


def fmt_mib(value: float | None) -> str:
    """Whole MiB; ``n/a`` for ``None``."""
    return "n/a" if value is None else f"{value:.0f}"


_HEADER = (
    f"| method | median s | rows/s | {TIMES} pipe | {TIMES} INSERT…SELECT | client µs/row "
    "| server µs/row | peak RSS MiB | verified |"
)


def results_table(summaries: Sequence[MethodSummary]) -> str:
    """The main table, one line per method."""
    lines = [_HEADER, "|" + "---|" * 9]
    for s in summaries:
        cells = [
            f"({s.key}) {s.label}",
            fmt_seconds(s.median_s),
            fmt_rate(s.rows_per_s),
            fmt_ratio(s.x_pipe),
            fmt_ratio(s.x_insert),
            fmt_us(s.client_us_per_row),
            fmt_us(s.server_us_per_row),
            fmt_mib(s.peak_rss_mib),
            s.verified_text if s.status == "ok" else f"**{s.verified_text}**",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def details_table(summaries: Sequence[MethodSummary]) -> str:
    """Per-round wall times, in-process transfer time, own max RSS and notes."""
    lines = [
        f"| method | wall s per round | transfer s | transfer {TIMES} pipe | own peak RSS MiB "
        "| notes |",
        "|---|---|---|---|---|---|",
    ]
    for s in summaries:
        rounds = ", ".join(fmt_seconds(w) for w in s.wall_s)
        cells = [
            s.key,
            rounds,
            fmt_seconds(s.transfer_s),
            fmt_ratio(s.transfer_x_pipe),
            fmt_mib(s.own_maxrss_mib),
            s.notes,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(
    meta: dict[str, Any], summaries: Sequence[MethodSummary], problems: Sequence[str] = ()
) -> str:
    """The whole ``latest.md``: command, table, details, failures and the machine."""
    machine = meta.get("machine", {})
    server = meta.get("server", {})
    parts = [
        "# pgferry throughput benchmark: latest results",
        "",
        f"Command: `{meta.get('command', '')}`  ",
        f"Date: {meta.get('date', '')} · pgferry {meta.get('pgferry', '?')} "
        f"({meta.get('git', 'git commit unknown')})",
        "",
        f"{meta.get('rows', 0):,} rows of the standard workload, {meta.get('rounds', 0)} "
        f"alternating round(s); every figure is the median over the verified runs. Times are "
        f"whole-process wall times of a fresh process per run; `{TIMES} pipe` and "
        f"`{TIMES} INSERT…SELECT` are relative to methods (b) and (a) of the same benchmark "
        f"run. CPU per row: client = "
        f"user + system time of the method's process tree, server = all postgres processes. "
        f"Peak RSS: the client process tree, highest over the rounds. See "
        f"`benchmarks/README.md`.",
        "",
        results_table(summaries),
        "",
    ]
    if problems:
        parts += ["## Problems", "", *[f"- {p}" for p in problems], ""]
    parts += [
        "## Details",
        "",
        "Transfer s: the median time inside the child from its first connection to the end of "
        "the transfer, without interpreter start-up and imports. Own peak RSS: the child "
        "process alone (`VmHWM`), without its pool workers.",
        "",
        details_table(summaries),
        "",
    ]
    parts += ["## Machine", ""]
    parts += [f"- {name}: {value}" for name, value in machine.items()]
    parts += [
        f"- PostgreSQL: {server.get('server_version', '?')} ({server.get('kind', '?')}); "
        f"{server.get('version', '')}",
        "- server settings: "
        + ", ".join(f"{k} = {v}" for k, v in (server.get("settings") or {}).items()),
        f"- server CPU: {'measured' if server.get('postmaster_pid') else 'n/a (not local)'}",
        f"- workload: {meta.get('workload', '?')}; transform: {meta.get('transform', '?')}",
        "",
    ]
    return "\n".join(parts)


def to_json(
    meta: dict[str, Any],
    summaries: Sequence[MethodSummary],
    records: Sequence[RunRecord],
    problems: Sequence[str] = (),
) -> dict[str, Any]:
    """Everything, as JSON-able data: meta, per-method summaries with their runs."""
    methods = []
    for s in summaries:
        data = asdict(s)
        data["status"] = s.status
        data["runs_detail"] = [asdict(r) for r in records if r.method == s.key]
        methods.append(data)
    ok = all(s.status == "ok" for s in summaries) and not problems
    return {"meta": meta, "ok": ok, "problems": list(problems), "methods": methods}


def write_results(directory: Path, markdown: str, data: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``latest.md`` and ``latest.json`` atomically (through ``*.tmp`` files)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "latest.md", directory / "latest.json")
    texts = (markdown, json.dumps(data, indent=2, default=str) + "\n")
    for path, text in zip(paths, texts, strict=True):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return paths
