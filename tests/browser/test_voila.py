"""The workbench app served by Voila (what `workbench app` runs), in headless Chromium."""

from __future__ import annotations

import pytest

import urllib.error
import urllib.request

from flow import SLOW, TOKEN, Timer, edit_and_revert, no_inline_errors, pick_fact, trace_and_click, wait_app

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]


def test_voila_app_full_flow(voila_server, page, screenshots):
    timer = Timer()
    page.goto(f"{voila_server}/?token={TOKEN}", timeout=SLOW)
    wait_app(page, timer)
    page.screenshot(path=str(screenshots / "voila-fact.png"), full_page=True)
    pick_fact(page, timer)
    trace_and_click(page, screenshots, "voila", timer)
    edit_and_revert(page, screenshots, "voila", timer)
    no_inline_errors(page)
    print("voila timings (s):", timer.marks)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # report the 302 itself (a redirect to the login page)


def _status(url: str, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_voila_answers_only_loopback_hosts_with_the_token(voila_server):
    """No DNS rebinding: a request naming a foreign host is refused, even with the token;
    without the token no page (and no kernel) is served. (Static files answer anyway.)"""
    port = voila_server.rsplit(":", 1)[1]
    assert _status(f"{voila_server}/?token={TOKEN}", {"Host": f"evil.example:{port}"}) == 403
    assert _status(f"{voila_server}/", {"Host": f"127.0.0.1:{port}"}) in (302, 401, 403)


def test_voila_app_for_a_live_class(voila_server, page, screenshots):
    """Issue 20's points in the real browser; prints each action's time to first answer."""
    from class_flow import (Answered, back_to_eiffel, busy_and_cancel, cached_example_trace, compare_in_context,
                            edit_card_and_generations, free_prompts, labels_fit, out_of_range_layer, typed_fact)

    timer, answered = Timer(), Answered()
    page.goto(f"{voila_server}/?token={TOKEN}", timeout=SLOW)
    wait_app(page, timer)
    typed_fact(page, answered, screenshots)
    back_to_eiffel(page, answered)
    free_prompts(page, answered)
    cached_example_trace(page, answered)
    busy_and_cancel(page, answered)
    out_of_range_layer(page, answered)
    edit_card_and_generations(page, answered, screenshots, timer)
    compare_in_context(page, answered)
    page.screenshot(path=str(screenshots / "voila-compare.png"), full_page=True)
    labels_fit(page, screenshots)
    no_inline_errors(page)
    print("voila class timings (s):", timer.marks)
    print("voila class: seconds from click to first answer:", answered.seconds)


def test_voila_knowledge_view_after_an_edit(voila_server, page, screenshots):
    """Issue 39: after a ROME edit, "Did its knowledge change?" shows the letters and a typed
    prompt before and now (the class flow's step, alone); prints the seconds to first words."""
    from class_flow import Answered, edit_card_and_generations

    timer, answered = Timer(), Answered()
    page.goto(f"{voila_server}/?token={TOKEN}", timeout=SLOW)
    wait_app(page, timer)
    edit_card_and_generations(page, answered, screenshots, timer)
    no_inline_errors(page)
    print("voila knowledge view: seconds from click:", answered.seconds)


def test_voila_page_whose_kernel_another_tab_took_says_so(voila_server, page, screenshots):
    """Issue 41 (finding 3): the app keeps one kernel, and a second tab takes it. The first page
    says so at once, with its controls disabled and its clicks caught; the second page works."""
    timer = Timer()
    url = f"{voila_server}/?token={TOKEN}"
    page.goto(url, timeout=SLOW)
    wait_app(page, timer)
    controls = ("() => [...document.querySelectorAll('.wb-app :is(input, button, select, textarea)')]"
                ".map(e => e.disabled)")
    assert page.locator(".wb-kernel-lost").count() == 0 and not all(page.evaluate(controls))
    timer.marks["first page rendered"] = timer.marks.pop("app rendered")
    second = page.context.new_page()
    second.set_default_timeout(60_000)
    # Its kernel starts as soon as the server has the request: the first page's is shut down then.
    timer.mark("second page asked for")
    second.goto(url, timeout=SLOW, wait_until="commit")
    banner = page.locator(".wb-kernel-lost-banner")
    banner.wait_for(timeout=20_000)
    timer.mark("first page says it lost its kernel")
    assert "moved to another tab" in banner.inner_text() and "reload" in banner.inner_text().lower()
    disabled = page.evaluate(controls)
    assert disabled and all(disabled), "the first page's controls are still enabled"
    box = page.locator(".wb-app button >> visible=true").first.bounding_box()
    hit = page.evaluate("([x, y]) => !!document.elementFromPoint(x, y).closest('.wb-kernel-lost')",
                        [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
    assert hit, "a click on the first page still reaches its buttons"
    page.screenshot(path=str(screenshots / "voila-moved-tab.png"), full_page=False)
    wait_app(second, timer)  # marks "app rendered"
    second.wait_for_timeout(5_000)  # more than one of the page's kernel checks
    assert second.locator(".wb-kernel-lost").count() == 0
    assert not all(second.evaluate(controls)) and second.locator(".wb-fact-search input").is_enabled()
    assert page.locator(".wb-kernel-lost-banner").count() == 1  # the first page stays covered
    print("voila second tab timings (s):", timer.marks)


def test_voila_lesson_walk(voila_server, page, screenshots):
    """Issue 41's lesson mode: the four step cards walked over a prepared fact; prints each
    click's seconds to its first answer on the page (benchmarks/lesson_clicks.py --browser)."""
    from class_flow import Answered, lesson_walk

    timer, answered = Timer(), Answered()
    page.goto(f"{voila_server}/?token={TOKEN}", timeout=SLOW)
    wait_app(page, timer)
    lesson_walk(page, answered, screenshots)
    print("voila lesson: seconds from click to first answer:", answered.seconds)
