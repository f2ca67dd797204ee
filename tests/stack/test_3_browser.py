"""The two UIs in a real browser: Debian's chromium, headless, driven by Playwright.

No browser is downloaded: Playwright launches ``/usr/bin/chromium`` (``make test-stack``
installs it with apt-get when missing). Assertions are on the pages' text; the screenshots are
kept under ``tests/stack/artifacts/`` for people.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from stack_support import ARTIFACTS, Airflow
from test_1_airflow import SHARED, events_copy_uri

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless=new",
    "--no-sandbox",  # as root, in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with sync_playwright() as p:
        # A fresh profile directory: nothing from an earlier run, nothing shared.
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            args=ARGS,
            headless=True,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    page = browser.new_page()
    yield page
    page.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_airflow_mapped_tasks_succeeded(page: Page, airflow: Airflow) -> None:
    run_id = SHARED["run_id"]
    partitions = [t["rendered_map_index"] for t in SHARED["mapped"]]
    page.goto(f"{airflow.url}/dags/pgferry_partitioned_copy/runs/{run_id}/tasks/copy_range/mapped")
    for name in partitions:  # the rows of the four mapped task instances, named by range
        page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("Success", exact=True).nth(4).wait_for(timeout=30_000)
    text = page.inner_text("body")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Each mapped task instance's row: its range, then its state.
    states = {lines[i]: lines[i + 1] for i, ln in enumerate(lines) if ln in partitions}
    assert states == dict.fromkeys(partitions, "Success"), text[-3000:]
    assert "Failed" not in lines
    shot(page, "airflow_mapped_tasks")
    # The grid of the DAG: the mapped task's row and its run.
    page.goto(f"{airflow.url}/dags/pgferry_partitioned_copy/runs/{run_id}")
    page.get_by_text("copy_range", exact=False).first.wait_for(timeout=60_000)
    page.wait_for_load_state("networkidle")
    grid = page.inner_text("body")
    assert "plan_ranges" in grid and "copy_range" in grid
    assert run_id in grid
    shot(page, "airflow_grid")


def test_airflow_asset_graph_shows_source_dag_and_target(
    page: Page, airflow: Airflow, stack: dict[str, Any]
) -> None:
    target = events_copy_uri(stack)
    assets = airflow.api("GET", "/assets?limit=100")["assets"]
    (asset,) = [a for a in assets if a["uri"] == target]
    source = next(a["uri"] for a in assets if a["uri"].endswith("/airflow_source/public/events"))
    page.goto(f"{airflow.url}/assets/{asset['id']}")
    page.get_by_text("Task Dependencies", exact=True).first.click()
    page.get_by_text(source, exact=True).first.wait_for(timeout=60_000)
    text = page.inner_text("body")
    for node in (source, "pgferry_partitioned_copy", "copy_range", target):
        assert node in text, node
    assert "pgferry:" not in text  # no alias node
    fit = page.locator(".react-flow__controls-fitview")  # the whole graph in the screenshot
    if fit.count():
        fit.first.click()
    shot(page, "airflow_asset_graph")


def test_dagster_asset_page_shows_row_count_and_columns(page: Page, stack: dict[str, Any]) -> None:
    page.goto(f"{stack['dagster_url']}/assets/customers")
    page.get_by_text("Row count", exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("email_domain", exact=True).first.wait_for(timeout=30_000)
    # The first visit opens a community sign-up dialog over the page: close it for the shot.
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=10_000)
    except PlaywrightTimeout:
        pass
    else:
        skip.click()
        skip.wait_for(state="detached", timeout=10_000)
    text = page.inner_text("body")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    count = lines[lines.index("Row count") + 1]
    assert count.isdigit() and int(count) > 0
    for column in ("id", "name", "email", "signed_up_at", "email_domain"):
        assert column in lines, column
    # Asset-level lineage, with the source labelled apart from the target.
    assert "customers_source" in text
    shot(page, "dagster_asset_page")
    # Column lineage: Dagster+ draws it; the open-source UI shows neither a graph nor the
    # metadata entry (test_2_dagster reads it through GraphQL). docs/dagster.md says so.
    page.goto(f"{stack['dagster_url']}/assets/customers?view=events")
    page.get_by_text("dagster/row_count", exact=True).first.wait_for(timeout=60_000)
    events = page.inner_text("body")
    assert "dagster/column_schema" in events
    assert "dagster/column_lineage" not in events
    shot(page, "dagster_asset_events")
