"""The app notebook opened and run in JupyterLab, in headless Chromium."""

from __future__ import annotations

import pytest

from flow import TOKEN
from flow import SLOW, Timer, edit_and_revert, no_inline_errors, pick_fact, trace_and_click, wait_app

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]


def run_all_cells(page) -> None:
    # Waiting on the execution indicator raced once; the status bar's "Idle" did not.
    page.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for(timeout=120_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def test_lab_notebook_full_flow(lab_server, page, screenshots):
    timer = Timer()
    page.goto(f"{lab_server}/lab/tree/workbench.ipynb?token={TOKEN}", timeout=SLOW)
    page.locator(".jp-Notebook").wait_for(timeout=120_000)
    timer.mark("lab open")
    run_all_cells(page)
    wait_app(page, timer)
    page.screenshot(path=str(screenshots / "lab-fact.png"), full_page=True)
    pick_fact(page, timer)
    trace_and_click(page, screenshots, "lab", timer)
    edit_and_revert(page, screenshots, "lab", timer)
    no_inline_errors(page)
    print("lab timings (s):", timer.marks)
