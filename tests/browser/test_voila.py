"""The workbench app served by Voila (what `workbench app` runs), in headless Chromium."""

from __future__ import annotations

import pytest

from flow import SLOW, Timer, edit_and_revert, no_inline_errors, pick_fact, trace_and_click, wait_app

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]


def test_voila_app_full_flow(voila_server, page, screenshots):
    timer = Timer()
    page.goto(voila_server + "/", timeout=SLOW)
    wait_app(page, timer)
    page.screenshot(path=str(screenshots / "voila-fact.png"), full_page=True)
    pick_fact(page, timer)
    trace_and_click(page, screenshots, "voila", timer)
    edit_and_revert(page, screenshots, "voila", timer)
    no_inline_errors(page)
    print("voila timings (s):", timer.marks)
