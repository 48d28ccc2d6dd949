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
