"""The app as a lecturer drives it in front of a class (issue 20): a typed fact the model
does not know, one busy line with Cancel, no stale or red status after a cancel, an
out-of-range layer refused, free prompts with their own answer, an edit result card,
"Did its knowledge change?": the fact's letters and a typed prompt written before the edit
and now, without special tokens, with a "before" while the edit stays applied.
Asserts on what a person sees; prints how long each action took to answer."""

from __future__ import annotations

import re
import time
from pathlib import Path

from flow import REAL, ROME_HPARAMS, SLOW, Timer, no_inline_errors, open_tab, probe_rows

#: A fact the issue found the default model does not know (its top answer is another state).
TYPED = ("Barack Obama", "{} was born in the state of", "Hawaii", "Texas")


class Answered:
    """Seconds from a click until the page shows its first answer, per action."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, click, wait) -> None:
        self._start = start = time.perf_counter()
        click()
        wait()
        self.seconds[name] = round(time.perf_counter() - start, 2)

    def complete(self, name: str, wait) -> None:
        """Seconds from the last click until ``wait`` returns: an action whose answer grows."""
        wait()
        self.seconds[name] = round(time.perf_counter() - self._start, 2)


def typed_fact(page, answered: Answered, shots: Path) -> None:
    # No "Loading weights 100%" bar left above the app.
    assert page.get_by_text("Loading weights").count() == 0
    open_tab(page, "Fact")
    # An empty true object is refused inline, and the current fact stays.
    page.locator(".wb-fact-true input").fill("")
    page.locator(".wb-fact-true input").press("Tab")
    page.locator("button.wb-fact-use").click()
    page.locator(".wb-fact-panel .wb-error", has_text="true object").wait_for(timeout=SLOW)
    assert "Eiffel" in page.locator(".wb-fact-current").inner_text()
    subject, prompt, true, new = TYPED
    page.locator(".wb-fact-subject input").fill(subject)
    page.locator(".wb-fact-prompt input").fill(prompt)
    page.locator(".wb-fact-true input").fill(true)
    page.locator(".wb-fact-new input").fill(new)
    page.locator(".wb-fact-new input").press("Tab")
    answered("typed fact: Use this fact", lambda: page.locator("button.wb-fact-use").click(),
             lambda: page.locator(".wb-fact-knows", has_text="Hawaii").wait_for(timeout=SLOW))
    knows = page.locator(".wb-fact-knows").inner_text()
    assert "rank" in knows and "Hawaii" in knows, knows
    if REAL:
        assert "does not know this fact" in knows, knows
    # Real probes for the typed fact: paraphrases from the relation's templates, filled in and editable.
    paraphrases = page.locator(".wb-fact-paraphrases textarea").input_value()
    assert "Barack Obama" in paraphrases, paraphrases
    assert "paraphrase" in page.locator(".wb-fact-probe-note").inner_text()
    page.locator(".wb-header", has_text="Barack Obama").wait_for(timeout=SLOW)  # the header follows the fact
    page.screenshot(path=str(shots / "voila-typed-fact.png"), full_page=True)
    open_tab(page, "Probes")
    page.locator(".wb-probe-table", has_text="Barack Obama").wait_for(timeout=SLOW)
    kinds = {r["kind"] for r in probe_rows(page)}
    assert {"edit", "paraphrase"} <= kinds, kinds
    no_inline_errors(page)


def back_to_eiffel(page, answered: Answered) -> None:
    open_tab(page, "Fact")
    page.locator(".wb-fact-search input").fill("Eiffel")
    page.locator(".wb-fact-search input").press("Enter")
    page.wait_for_function(
        "() => { const s = document.querySelector('.wb-fact-list select'); return s && s.options.length === 1; }")
    select = page.locator(".wb-fact-list select")
    answered("pick a fact", lambda: select.select_option(index=0),
             lambda: page.locator(".wb-fact-knows", has_text="Paris").wait_for(timeout=SLOW))
    if REAL:
        assert "knows this fact" in page.locator(".wb-fact-knows").inner_text()


def free_prompts(page, answered: Answered) -> None:
    open_tab(page, "Probes")
    assert page.locator(".wb-probe-free textarea").input_value() == ""  # cleared with the new fact
    page.locator(".wb-probe-free textarea").fill("Rome is the capital of → Italy\nMy favourite colour is")
    page.locator(".wb-probe-free textarea").press("Tab")
    answered("Probe now", lambda: page.locator("button.wb-probe-run").click(),
             lambda: page.locator(".wb-probe-table", has_text="free (Italy)").wait_for(timeout=SLOW))
    rows = {r["prompt"]: r for r in probe_rows(page)}
    own, bare = rows["Rome is the capital of"], rows["My favourite colour is"]
    assert own["p(true) now"] == "" and own["p(new/target) now"] != ""
    assert bare["kind"] == "free" and bare["p(new/target) now"] == "" and bare["top-1 now"] != ""


def cached_example_trace(page, answered: Answered) -> None:
    """A bundled example at the app's default settings: its exact trace is committed, so it answers at once."""
    open_tab(page, "Trace")
    samples = page.locator(".wb-trace-samples input")
    assert samples.input_value() == "3"  # the app's default, as the committed traces were made
    status = page.locator(".wb-trace-panel .wb-status", has_text="from the trace cache")
    answered("Run trace: bundled example (cached)", lambda: page.locator("button.wb-trace-run").click(),
             lambda: page.locator(".wb-trace-heatmap-mlp .main-svg").first.wait_for(timeout=SLOW))
    if REAL:
        status.first.wait_for(timeout=SLOW)
        assert page.locator(".wb-trace-note").inner_text().strip() == ""  # the exact trace, not a preview
    else:
        page.locator(".wb-trace-panel .wb-status", has_text="done in").first.wait_for(timeout=SLOW)


def busy_and_cancel(page, answered: Answered) -> None:
    open_tab(page, "Trace")
    # Settings no trace was kept for: this one runs (and is cancelled, so it is not kept either).
    samples = page.locator(".wb-trace-samples input")
    samples.fill("4")
    samples.press("Tab")
    answered("Run trace: preview", lambda: page.locator("button.wb-trace-run").click(),
             lambda: page.locator(".wb-trace-heatmap-mlp .main-svg").first.wait_for(timeout=SLOW))
    busy = page.locator(".wb-busy", has_text="Run trace")
    busy.wait_for(timeout=SLOW)
    assert "Busy" in busy.inner_text() and "Trace tab" in busy.inner_text(), busy.inner_text()
    # Every quick button that needs the model waits while the trace holds it.
    assert page.locator("button.wb-fact-use").is_disabled()
    assert page.locator("button.wb-probe-run").is_disabled()
    assert page.locator("button.wb-memory-run").is_disabled()
    # A fact is not half-chosen meanwhile: the list waits too, and the busy line says so (issue 41).
    assert page.locator(".wb-fact-list select").is_disabled()
    assert "choosing a fact" in busy.inner_text(), busy.inner_text()
    page.locator("button.wb-busy-cancel").click()
    page.locator(".wb-trace-panel .wb-status", has_text="cancelled").wait_for(timeout=SLOW)
    # The busy line lets go of the trace (the greedy answers may refill in the background, quietly).
    page.wait_for_function("() => !document.querySelector('.wb-busy').innerText.includes('Busy')", timeout=SLOW)
    # The greedy answers that refill now make no line of their own ("in the background … 0.0 s").
    page.wait_for_function("() => document.querySelector('.wb-busy').innerText.trim() === ''", timeout=SLOW)
    assert not page.locator(".wb-fact-list select").is_disabled()
    note = page.locator(".wb-trace-panel .wb-error span")
    assert note.inner_text().strip() == "Cancelled."
    assert "176, 0, 32" not in note.evaluate("e => getComputedStyle(e).color")  # not the error red
    assert not page.locator("button.wb-fact-use").is_disabled()


def out_of_range_layer(page, answered: Answered) -> None:
    open_tab(page, "Memories")
    layer = page.locator(".wb-memory-layer input")
    layer.fill("25")
    layer.press("Tab")
    page.locator("button.wb-memory-run").click()
    page.locator(".wb-memories-panel .wb-error", has_text="out of range").wait_for(timeout=SLOW)
    assert layer.input_value() == "25"  # the field keeps what was typed; no table contradicts it
    assert page.locator(".wb-memory-table .wb-memory-key").count() == 0
    layer.fill("4")
    layer.press("Tab")
    page.locator("button.wb-memory-run").click()
    page.locator(".wb-memory-table .wb-memory-key").first.wait_for(timeout=SLOW)
    assert page.locator(".wb-memories-panel .wb-error").first.inner_text().strip() == ""
    # Each column explains itself on hover.
    title = page.locator(".wb-memory-table b", has_text="coefficient").get_attribute("title")
    assert title and "hidden state" in title
    assert page.locator(".wb-memory-readable input").is_checked()
    memories_sorted_by_push(page)
    # A key is a link to its profile: the tokens its value promotes, its top corpus contexts,
    # its coefficient over the prompt (the first profile at a layer reads the corpus once).
    key = page.locator(".wb-memory-table .wb-memory-key").first
    number = key.inner_text().strip()
    profile = page.locator(".wb-memory-profile")
    answered("key profile (corpus read once per layer)", key.click,
             lambda: profile.locator(".wb-memory-contexts").wait_for(timeout=SLOW))
    text = profile.inner_text()
    assert f"Key {number}" in text and "promotes" in text and "coefficient over the prompt" in text, text
    assert page.locator(".wb-memories-panel .wb-error").first.inner_text().strip() == ""


#: Per memories chart on the page: its row keys top to bottom, and the row labels that do
#: not fit inside the figure (cut off at the left, or below its bottom).
CHART_ROWS = """(() => [...document.querySelectorAll('.wb-memory-chart .js-plotly-plot')].map(plot => {
    const box = plot.getBoundingClientRect();
    const ticks = [...plot.querySelectorAll('.ytick text')].map(e => [e.getBoundingClientRect(), e.textContent]);
    ticks.sort((a, b) => a[0].y - b[0].y);
    return {keys: ticks.map(t => t[1].split(':')[0].replace('key ', '')),
            cut: ticks.filter(t => t[0].left < box.left - 1 || t[0].bottom > box.bottom + 1).map(t => t[1])};
}))()"""


def memories_sorted_by_push(page) -> None:
    """Issue 41: the push column explains itself, sorts the table and the chart alike, and the
    chart shows every row and label; the subject's line says what it carries here."""
    head = page.locator(".wb-memory-table b", has_text="pushes")
    assert "directly at this position" in (head.get_attribute("title") or "")
    assert "carries here" in page.locator(".wb-memory-subject").inner_text()
    assert "attention heads" in page.locator(".wb-memory-notes").inner_text()
    page.locator(".wb-memory-sort select").select_option(label="push on the answer")
    page.wait_for_function(
        """() => { const v = [...document.querySelectorAll('.wb-memory-table .wb-memory-push')]
                     .map(e => parseFloat(e.innerText));
                   return v.length > 1 && v.every((x, i) => i === 0 || v[i - 1] >= x); }""", timeout=SLOW)
    keys = [k.strip() for k in page.locator(".wb-memory-table .wb-memory-key").all_inner_texts()]
    # The chart's row labels, top row first, are the table's keys in the table's order (the old
    # chart may still be on the page a moment: wait for one that matches).
    page.wait_for_function(f"(keys) => {CHART_ROWS}.some(c => JSON.stringify(c.keys) === JSON.stringify(keys))",
                           arg=keys, timeout=SLOW)
    charts = page.evaluate(CHART_ROWS)
    chart = next(c for c in charts if c["keys"] == keys)
    assert not chart["cut"], f"chart labels cut off: {chart['cut']}"
    page.locator(".wb-memory-sort select").select_option(label="weight |m|·|v|")


def edit_card_and_generations(page, answered: Answered, shots: Path, timer: Timer) -> None:
    open_tab(page, "Edit")
    assert "rank-one" in page.locator(".wb-edit-description").inner_text()  # the method, in one line
    hp = page.locator(".wb-edit-hparams textarea")
    hp.fill(ROME_HPARAMS)
    hp.press("Tab")
    card = page.locator(".wb-edit-card .wb-edit-card-rows")
    answered("Apply edit (ROME, card shown)", lambda: page.locator("button.wb-edit-apply").click(),
             lambda: card.wait_for(timeout=SLOW))
    timer.mark("edit card shown")
    text = page.locator(".wb-edit-card").inner_text()
    for kind in ("edit prompt", "paraphrase", "neighbour", "implication"):
        assert kind in text, (kind, text)
    if REAL:
        first = page.locator(".wb-edit-card-rows tbody tr").first.inner_text()
        assert "Paris" in first and "Rome" in first, first
    # Issue 41, finding 8: the header counted the edit 1-3 s after the card (the panels'
    # recomputations ran first). Its message now follows the card's at once.
    page.locator(".wb-header .wb-edit-count", has_text="1").wait_for(timeout=500)
    # The README's picture is of the settled page: the busy line lets the edit go once the
    # panels' refresh after it ends.
    page.wait_for_function("() => !document.querySelector('.wb-busy').innerText.includes('editing with')",
                           timeout=SLOW)
    page.screenshot(path=str(shots / "voila-edit-card.png"), full_page=True)
    copy_as_code(page, shots)
    knowledge_view(page, answered, shots)
    open_tab(page, "Edit")
    page.locator("button.wb-edit-revert").click()
    page.locator(".wb-edit-history", has_text="reverted").wait_for(timeout=SLOW)
    assert page.locator(".wb-edit-card").inner_text().strip() == ""
    no_inline_errors(page)


def copy_as_code(page, shots: Path) -> None:
    """Issue 41: "Copy as code" after an edit shows the ``wb.edit(...)`` call that made it, as
    a cell a student can paste into a notebook (the fact first, the method spelled out)."""
    snippet = page.locator(".wb-edit-code .wb-code-snippet")
    assert snippet.count() == 0  # closed until asked for
    page.locator(".wb-edit-code button.wb-code-button").click()
    snippet.wait_for(timeout=SLOW)
    text = snippet.inner_text()
    assert "import workbench as wb" in text and "fact = wb.Fact(" in text, text
    assert "handle = wb.edit(" in text and "method='rome'" in text, text
    page.locator(".wb-edit-code").screenshot(path=str(shots / "voila-copy-as-code.png"))
    page.locator(".wb-edit-code button.wb-code-button").click()  # closed again: the tab as it was
    snippet.wait_for(state="detached", timeout=SLOW)


#: A free prompt for the knowledge view: a letter the lecturer types, not one of the fact's own.
LETTER = "Dear Sam, here is a postcard from the Eiffel Tower, in the city of"


def knowledge_view(page, answered: Answered, shots: Path) -> None:
    """Issue 39: after an edit, "Did its knowledge change?" writes the fact's letters and a typed
    free prompt before the edit and now, the objects marked, a verdict per text and the counts."""
    open_tab(page, "Probes")
    free = page.locator(".wb-probe-free textarea")
    free.fill(LETTER)
    free.press("Tab")
    view = page.locator(".wb-knowledge-view")
    view.scroll_into_view_if_needed()
    assert "Did its knowledge change?" in view.inner_text()
    now = page.locator(".wb-knowledge-table .wb-knowledge-now")
    answered("Knowledge view: first words of 'now'", lambda: page.locator("button.wb-knowledge-run").click(),
             lambda: page.wait_for_function(
                 "() => [...document.querySelectorAll('.wb-knowledge-table .wb-knowledge-now')]"
                 ".some(td => td.innerText.replace('…', '').trim().length > 0)", timeout=SLOW))
    answered.complete("Knowledge view: six letters 'now' with counts", lambda: page.locator(
        ".wb-knowledge-counts", has_text=re.compile(r"now: \d+ of 6 name")).first.wait_for(timeout=SLOW))
    answered.complete("Knowledge view: complete (free prompt's 'before' too)", lambda: page.locator(
        ".wb-knowledge-run-task .wb-status", has_text="done in").wait_for(timeout=SLOW))
    counts = page.locator(".wb-knowledge-counts").inner_text()
    assert "Letters" in counts and "now:" in counts and "before:" in counts and "of 6 name Rome" in counts, counts
    assert "Free-prompt texts" in counts, counts
    assert now.count() == 8, now.count()  # 3 letter prompts and the free one, 2 samples each
    before = page.locator(".wb-knowledge-table .wb-knowledge-before").all_inner_texts()
    assert all(t.strip() for t in before), before  # every "before" made on the unedited weights
    verdicts = {t.strip() for t in page.locator(".wb-knowledge-verdict-now").all_inner_texts()}
    assert verdicts <= {"new", "old", "both", "neither"} and verdicts, verdicts
    assert page.locator(".wb-knowledge-table", has_text="Dear Sam").count() == 1
    text = page.locator(".wb-knowledge-table").inner_text()
    assert "<start_of_image>" not in text and "<eos>" not in text, text
    if REAL:
        # The unedited model writes Paris into some letter, marked in the old object's colour.
        assert page.locator(".wb-knowledge-before mark.wb-mark-old").count() >= 1
    view.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "voila-knowledge-view.png"), full_page=True)
    no_inline_errors(page)


def compare_in_context(page, answered: Answered) -> None:
    """Compare in plain words: rates in % with intervals, the facts listed, no code names."""
    open_tab(page, "Compare")
    page.locator(".wb-compare-methods select").select_option(["in-context"])
    page.locator(".wb-compare-said input").uncheck()  # teacher-forced only: the short run a class waits for
    assert page.locator(".wb-compare-limit input").input_value() == "5"  # the readable minimum by default
    answered("Compare: in-context on 5 facts, first fact's row", lambda: page.locator("button.wb-compare-run").click(),
             lambda: page.locator(".wb-compare-table .wb-compare-rows").wait_for(timeout=SLOW))
    answered.complete("Compare: complete, with its chart",
                      lambda: page.locator(".wb-compare-chart .main-svg").first.wait_for(timeout=SLOW))
    table = page.locator(".wb-compare-table")
    heads = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    assert "edit prompt (p)" in heads and "neighbours kept (p)" in heads, heads
    assert not [h for h in heads if "_" in h], heads  # no efficacy_score-like code names
    cells = dict(zip(heads, (c.strip() for c in table.locator("tbody tr").first.locator("td").all_inner_texts())))
    assert cells["method"] == "in-context", cells
    assert cells["edit prompt (p)"].endswith("%") and "±" in cells["edit prompt (p)"], cells
    facts = page.locator(".wb-compare-facts").inner_text()
    assert facts.startswith("Facts:") and facts.count("→") >= int(cells["facts"]) >= 1, (facts, cells)
    # The current fact leads the list, or the line says why it is not in it (issue 41, finding 9).
    assert "(the current fact)" in facts or "not the current fact" in facts, facts
    # The estimate says what it rests on; after a run, this session's own seconds (finding 6).
    estimate = page.locator(".wb-compare-estimate").inner_text()
    assert estimate.startswith("≈") and "in this session" in estimate, estimate
    page.locator(".wb-compare-chart .main-svg").first.wait_for(timeout=SLOW)
    # Its follow-ups done (the panels redrawn on the reverted weights): no busy line left.
    page.locator(".wb-compare-run-task .wb-status", has_text="done in").wait_for(timeout=SLOW)
    assert page.locator(".wb-compare-panel .wb-error").first.inner_text().strip() == ""


#: Every label and button text a person reads in the app (descriptions, checkboxes, buttons).
LABELS = ".wb-app label.widget-label, .wb-app label.widget-label-basic, .wb-app button"


def labels_fit(page, shots: Path) -> None:
    """No label or button text is cut ("Hyper-par…", "Find knowledge ne…"): in every tab,
    each visible label's text fits its box (issue 41)."""
    cut = {}
    for title in ("Fact", "Trace", "Memories", "Edit", "Probes", "Compare", "Knockout"):
        open_tab(page, title)
        page.wait_for_timeout(300)
        found = page.evaluate(
            "(sel) => [...document.querySelectorAll(sel)]"
            ".filter(e => e.offsetParent !== null && e.innerText.trim() && e.scrollWidth > e.clientWidth + 1)"
            ".map(e => e.innerText.trim())", LABELS)
        if found:
            cut[title] = found
            page.screenshot(path=str(shots / f"voila-cut-labels-{title.lower()}.png"), full_page=True)
    assert not cut, f"labels cut off: {cut}"


def lesson_walk(page, answered: Answered, shots: Path) -> None:
    """Issue 41's lesson mode: switch it on, choose the second lesson fact, walk the four cards
    (Trace, Memories, Knockout from the prepared lesson), apply the edit, open the probes; each
    click's seconds to its first answer on the page (the goal: 1 s). Reverts what it applied."""
    page.locator("button.wb-lesson-toggle").click()
    page.locator(".wb-lesson-card-4").wait_for(timeout=SLOW)
    titles = [page.locator(f".wb-lesson-card-{n}").inner_text() for n in range(1, 5)]
    for n, title in enumerate(("Does it know?", "Where?", "Edit", "Did its knowledge change?"), 1):
        assert f"{n} · {title}" in titles[n - 1], titles
    # The note is a separate widget message: wait for its text rather than read it at once.
    page.locator(".wb-lesson-note", has_text="prepared" if REAL else "").wait_for(timeout=SLOW)
    note = page.locator(".wb-lesson-note").inner_text()
    if REAL:
        assert "prepared ahead" in note, note
    select = page.locator(".wb-lesson-facts select")
    label = (select.locator("option").nth(1).text_content() or "").replace("\u00a0", " ")  # ipywidgets: nbsp
    text = label.split(". ", 1)[1].rsplit(" → ", 1)[0]
    answered("lesson: choose a fact (1 · Does it know?)", lambda: select.select_option(index=1),
             lambda: page.locator(".wb-fact-current", has_text=text).wait_for(timeout=SLOW))
    page.locator(".wb-fact-knows").wait_for(timeout=SLOW)
    # The class reads step 1 while the other tabs' prepared figures arrive and are drawn, hidden
    # (lesson mode sends them 1.5 s after the pick); the knockout's come last.
    answered.complete("lesson: the other tabs drawn (after the pick)",
                      lambda: page.locator(".wb-knockout-figures .main-svg").first.wait_for(state="attached",
                                                                                          timeout=SLOW))
    trace_status = page.locator(".wb-trace-panel .wb-status", has_text="prepared ahead")
    answered("lesson: 2 · Where? → Trace", lambda: page.locator("button.wb-lesson-go-2").click(),
             lambda: page.locator(".wb-trace-heatmap-mlp .main-svg").first.wait_for(timeout=SLOW))
    if REAL:
        trace_status.first.wait_for(timeout=SLOW)
    # Drawn while its tab was hidden (lesson mode fills every panel at the pick): is it whole?
    page.screenshot(path=str(shots / "voila-lesson-trace.png"), full_page=True)
    answered("lesson: Memories (peak, key profile)", lambda: page.locator("button.wb-lesson-go-memories").click(),
             lambda: page.locator(".wb-memory-profile", has_text="Key").wait_for(timeout=SLOW))
    if REAL:
        assert "prepared ahead" in page.locator(".wb-memory-summary").inner_text()
        assert page.locator(".wb-memory-table .wb-memory-key").count() > 0
    answered("lesson: Knockout", lambda: page.locator("button.wb-lesson-go-knockout").click(),
             lambda: page.locator(".wb-knockout-figures .main-svg").first.wait_for(timeout=SLOW))
    answered("lesson: 3 · Edit", lambda: page.locator("button.wb-lesson-go-3").click(),
             lambda: page.locator(".wb-edit-panel").wait_for(state="visible", timeout=SLOW))
    answered("lesson: Apply edit", lambda: page.locator("button.wb-edit-apply").click(),
             lambda: page.locator(".wb-edit-card .wb-edit-card-rows").wait_for(timeout=SLOW))
    answered("lesson: 4 · Did its knowledge change?", lambda: page.locator("button.wb-lesson-go-4").click(),
             lambda: page.locator(".wb-probes-panel").wait_for(state="visible", timeout=SLOW))
    page.locator(".wb-probe-table", has_text="now").wait_for(timeout=SLOW)
    page.screenshot(path=str(shots / "voila-lesson.png"), full_page=True)
    open_tab(page, "Edit")
    page.locator("button.wb-edit-revert-all").click()
    page.locator(".wb-edit-history", has_text="reverted").wait_for(timeout=SLOW)
    no_inline_errors(page)
