"""Lesson mode's strip: the switch, the fact list and the four step cards above the tabs.

What is prepared, and the file it is kept in, are :mod:`workbench.ui.lesson`'s; this module
only shows it. Choosing a lesson fact fills the panels from the lesson (no model call), the
current tab's at once and the others' a moment later (:data:`FILL_DELAY`); a step card's button
opens its tab.

Example:
    >>> app = wb.Workbench(lesson=True)        # doctest: +SKIP
    >>> app.lesson.go(2)                       # "Where?": the Trace tab, the prepared trace   # doctest: +SKIP
"""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as widgets

from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.locate.enrichment import EnrichmentResult
from workbench.ui.lesson import (PREPARED, STEPS, Lesson, Prepared, fact_key, prepared_edit, prepared_letters,
                                 read_lesson)
from workbench.ui.widgets import ErrorLine, guarded, sentence

#: Seconds after a pick before the panels of other tabs are filled (see ``_fact_changed``).
FILL_DELAY = 1.5


class LessonStrip(widgets.VBox):
    """A "Lesson" switch and, when on, the lesson's facts and four step cards in order.

    Args:
        app: the :class:`~workbench.ui.app.Workbench` (its state, panels and tabs).
        lesson: the lesson (default: :func:`read_lesson` for the app's model).
        on: start with lesson mode on.
    """

    def __init__(self, app, lesson: Lesson | None = None, *, on: bool = False) -> None:
        self.app = app
        self.state = app.state
        #: The lesson, read when lesson mode is first switched on (an app without it reads no file).
        self._lesson = lesson
        self._quiet = False  # filling the list is not a choice
        self.toggle = widgets.ToggleButton(value=False, description="Lesson", icon="graduation-cap",
                                           tooltip="lesson mode: step cards over facts prepared ahead",
                                           layout=widgets.Layout(width="auto"))
        self.toggle.add_class("wb-lesson-toggle")
        self.error = ErrorLine()
        self.choice = widgets.Dropdown(options=[], description="Fact", layout=widgets.Layout(width="520px"))
        self.choice.add_class("wb-lesson-facts")
        self.note = widgets.HTML()
        self.note.add_class("wb-lesson-note")
        self.buttons: list[widgets.Button] = []
        cards = []
        for n, (title, text, label, _tab) in enumerate(STEPS, 1):
            button = widgets.Button(description=label, button_style="info", layout=widgets.Layout(width="auto"))
            button.add_class("wb-lesson-go")
            button.add_class(f"wb-lesson-go-{n}")
            button.on_click(lambda _, n=n: self._guarded(self.go, n))
            self.buttons.append(button)
            extra = []
            if n == 2:  # "Where?" covers three tabs
                for name, label2 in (("memories", "Memories"), ("knockout", "Knockout")):
                    b = widgets.Button(description=label2, layout=widgets.Layout(width="auto"))
                    b.add_class(f"wb-lesson-go-{name}")
                    b.on_click(lambda _, name=name: self._guarded(self.go, 2, name))
                    extra.append(b)
            body = widgets.HTML(f"<b>{n} · {html.escape(title)}</b><br><span style='color:#444'>"
                                f"{html.escape(text)}</span>" + self._cost_html(n))
            card = widgets.VBox([body, widgets.HBox([button, *extra])],
                                layout=widgets.Layout(width="24%", border="1px solid #ccc", padding="4px",
                                                      margin="2px"))
            card.add_class("wb-lesson-card")
            card.add_class(f"wb-lesson-card-{n}")
            cards.append(card)
        self.cards = widgets.HBox(cards, layout=widgets.Layout(width="100%"))
        self.body = widgets.VBox([widgets.HBox([self.choice, self.note]), self.cards, self.error],
                                 layout=widgets.Layout(display="none"))
        #: Panels of the current fact still to be filled from the lesson.
        self.pending: set[str] = set()
        self.toggle.observe(lambda ch: self._switch(ch["new"]), "value")
        # Another fact in the list: the walk starts again at step 1.
        self.choice.observe(lambda _: self._quiet or self._guarded(self.go, 1), "value")
        self.state.on("fact", self._fact_changed)
        self.state.on("weights", self._weights_changed)
        app.tabs.observe(lambda ch: self._guarded(self._tab_opened, self.app.tab_name(ch["new"])), "selected_index")
        super().__init__([self.toggle, self.body])
        self.add_class("wb-lesson")
        self.toggle.value = on

    # -- small helpers --------------------------------------------------------------------------
    def _guarded(self, fn, *args) -> None:
        guarded(self.error, fn)(*args)

    def _note_html(self) -> str:
        lesson = self.lesson
        if lesson.prepared:
            where = lesson.source.name if lesson.source is not None else "?"
            text = (f"{len(lesson.prepared)} facts prepared ahead ({where}): their trace, memories, key profile, "
                    "knockout and letters answer at once")
            return (f"<span style='color:#1b5e20'>{html.escape(text)}</span>"
                    + (f"<br><span style='color:#8a4b00'>{html.escape(lesson.note)}</span>" if lesson.note else ""))
        return f"<span style='color:#8a4b00'>{html.escape(lesson.note[:1].upper() + lesson.note[1:])}.</span>"

    def _cost_html(self, step: int) -> str:
        if step != 3:
            return ""
        return ("<br><i style='color:#8a4b00'>An edit is not instant on a CPU (a few seconds), unless set-up "
                "saved it (<code>workbench app --lesson</code>): then Apply loads it at once.</i>")

    def _switch(self, on: bool) -> None:
        if on:
            # Fill the list and the note before the cards show, so a page never shows an empty note.
            self._guarded(self._load)
        self.body.layout.display = "" if on else "none"
        if on:
            self._fact_changed()
        else:
            self._release_answers()

    @property
    def lesson(self) -> Lesson:
        """The lesson (read now if not yet: :func:`read_lesson` for the app's model)."""
        if self._lesson is None:
            try:
                self._lesson = read_lesson(self.app.model)
            except Exception as exc:  # noqa: BLE001 - the app works without a lesson
                self.error.show(exc)
                self._lesson = Lesson(facts=[], prepared={}, note=f"the lesson could not be read ({sentence(exc)})")
        return self._lesson

    def _load(self) -> None:
        """Fill the fact list and the note from the lesson, once."""
        if self.choice.options:
            return
        lesson = self.lesson
        options = [(f"{i}. {f.text} → {f.target_true}", i) for i, f in enumerate(lesson.facts, 1)]
        current = self.state.fact
        at = next((i for i, f in enumerate(lesson.facts, 1) if current is not None and fact_key(f) == fact_key(current)),
                  1)
        self._quiet = True
        try:
            self.choice.options = options
            self.choice.value = at if options else None
        finally:
            self._quiet = False
        self.note.value = self._note_html()

    @property
    def fact(self) -> Fact | None:
        """The lesson fact chosen in the strip's list."""
        i = self.choice.value
        return self.lesson.facts[i - 1] if i else None

    # -- what a card's button does -----------------------------------------------------------------
    def go(self, step: int, tab: str | None = None) -> None:
        """Step ``step``'s button: make the chosen lesson fact current (if it is not), open the
        step's tab (``tab``: another of the step's tabs) and show what is prepared there."""
        self.error.clear()
        fact = self.fact
        if fact is None:
            raise WorkbenchError("this lesson has no facts")
        current = self.state.fact
        name = tab or STEPS[step - 1][3]
        if current is None or fact_key(current) != fact_key(fact):
            # The step's tab first: it fills at once, the others right after this click's answers
            # (the first answer of a pick is the Fact tab's line).
            self.pending = set()
            self.app.show_tab(name)
            self.app.fact.pick(fact)
            if self.state.fact is None or fact_key(self.state.fact) != fact_key(fact):
                # Refused (the model is busy): the Fact panel's sentence, here where the click was.
                raise WorkbenchError(self.app.fact.error.text or "the fact could not be chosen now")
        self.app.show_tab(name)
        self.fill(name)  # the tab may already be open: no change event then

    def prepared_edit(self, fact: Fact | None, method: str, layers: list[int] | None, hparams: dict) -> Path | None:
        """The edit set-up saved for ``fact`` (a lesson fact, lesson mode on), if the ask is the default one."""
        if not self.toggle.value or fact is None or fact_key(fact) not in {fact_key(f) for f in self.lesson.facts}:
            return None
        return prepared_edit(self.state.model, fact, method, layers, hparams)

    def prepared_letters(self, prompts: tuple[str, ...]) -> list[str] | None:
        """The letters' "now" column set-up sampled on the edit applied now (lesson mode, a lesson fact)."""
        fact = self.state.fact
        if not self.toggle.value or fact is None or fact_key(fact) not in {fact_key(f) for f in self.lesson.facts}:
            return None
        return prepared_letters(self.state.model, fact, prompts)

    # -- filling the panels ---------------------------------------------------------------------------
    def prepared_now(self) -> Prepared | None:
        """The current fact's prepared results, when lesson mode is on and the weights are unedited."""
        if not self.toggle.value or not self.state.model.is_unedited():
            return None
        return self.lesson.get(self.state.fact)

    def _fact_changed(self) -> None:
        prepared = self.prepared_now()
        self.pending = {"trace", "memories", "knockout"} if prepared is not None else set()
        if prepared is None:
            return
        knowledge = getattr(self.app.probes, "knowledge", None)
        if knowledge is not None:
            # The letters' "before" column needs no model either: the knowledge view keeps it by prompts.
            knowledge.before.update(prepared.letters)
        self._guarded(self.fill, self.app.tab_name(self.app.tabs.selected_index))
        # The other panels too, after the page has drawn this click's answers (drawing figures
        # holds a browser's only thread: sent at once, they delayed the fact's line by 5 s).
        # They are drawn in their hidden tabs while the class reads step 1, and opening a tab
        # then shows a figure already there instead of sending and drawing one (about 2 s).
        self.state.soon(lambda: self._guarded(self._fill_all), delay=FILL_DELAY)

    def _fill_all(self) -> None:
        for name in ("trace", "memories", "knockout"):
            self.fill(name)
        if self.prepared_now() is not None:
            warm = getattr(self.app.panels.get("edit"), "warm_card", None)
            if warm is not None:
                warm()  # the edit card's "before" column: Apply then probes only the edited model

    def _weights_changed(self) -> None:
        # Prepared results are of the unedited weights: after the last revert, panels left empty fill again.
        if self.state.model.is_unedited():
            self._fact_changed()
        else:
            self.pending = set()

    def holds_answers(self) -> bool:
        """Whether the Probes panel's greedy answers wait: in lesson mode, until its tab opens
        (they hold the cores for seconds, and the prepared clicks before step 4 need none)."""
        return bool(self.toggle.value) and self.app.tab_name(self.app.tabs.selected_index) != "probes"

    def _release_answers(self) -> None:
        release = getattr(self.app.panels.get("probes"), "release_answers", None)
        if release is not None:
            release()

    def _tab_opened(self, name: str | None) -> None:
        self.fill(name)
        if name == "probes":
            self._release_answers()

    def fill(self, name: str | None) -> None:
        """Show the prepared results in panel ``name`` if it still waits for them (else nothing)."""
        if name not in self.pending:
            return
        prepared = self.prepared_now()
        self.pending.discard(name)
        if prepared is None:
            return
        {"trace": self._fill_trace, "memories": self._fill_memories, "knockout": self._fill_knockout}[name](prepared)

    def _fill_trace(self, p: Prepared) -> None:
        from workbench.ui.code import cell
        from workbench.ui.trace import trace_call

        panel = self.app.trace
        if panel.task.running or panel.figure_widgets:
            return  # a run of its own is under way or shown: leave it
        asked = panel.settings(answer=p.trace_answer)
        if asked.key(self.state.model, p.fact) != p.trace_key:
            panel.task.status.value = "settings differ from the lesson's: Run trace computes"
            return
        panel.error.clear()
        # As the panel's own run says it (TracePanel._answer): a lesson fact is known, so rarely shown.
        panel.answer_note = ("" if p.trace_answer is None else
                             f"The model's top answer does not begin the true object: traced towards "
                             f"{p.trace_answer!r} (its first token) instead.")
        panel.show(p.trace)
        panel.code.set(cell(self.state, trace_call(p.fact, asked, cache=True)))
        panel.task.status.value = (f"{PREPARED} (computed at set-up in {p.seconds.get('trace', p.trace.seconds):.1f} s)"
                                   " — Run trace to recompute")

    def _fill_memories(self, p: Prepared) -> None:
        from workbench.locate import enrichment, memories
        from workbench.snippets import Call, Code
        from workbench.ui.code import cell

        panel = self.app.memories
        if panel.report is not None or int(panel.top_k.value) != p.memory_keys:
            return
        panel.layer.value = p.layer
        if p.position in [v for _, v in panel.position.options]:
            panel.position.value = p.position
        panel.enriched = p.enrichment
        panel.show(p.memories)
        key = p.profile.key
        panel.profile.value = (f"<b>Key {key}</b> at layer {p.layer} (its value vector, whatever the sign of its "
                               "coefficient here)" + panel._profile_html(p.profile))
        asked = dict(layer=p.layer, position=p.position, top_k=p.memory_keys, answer=p.fact.target_true)
        calls = [Call(memories, (Code("fact.text"),), asked, result="report")]
        if not isinstance(p.enrichment, str):
            calls.append(Call(enrichment, (p.fact,), result="enriched"))
        panel.code.set(cell(self.state, calls, fact=p.fact))
        panel.header.value = (f"<div class='wb-lesson-prepared' style='color:#1b5e20'><i>{PREPARED}: the trace's "
                              f"peak (layer {p.layer}, the subject's last token) and key {key}'s profile — Show "
                              "memories or a key to recompute</i></div>" + panel.header.value)

    def _fill_knockout(self, p: Prepared) -> None:
        from workbench.locate import enrichment, knockout
        from workbench.snippets import Call
        from workbench.ui.code import cell

        panel = self.app.knockout
        if panel.result is not None or panel.task.running:
            return
        if (int(panel.window.value) != p.knockout.window or panel.answer.value.strip()
                or not panel.with_enrichment.value):
            panel.task.status.value = "settings differ from the lesson's: Run knockout computes"
            return
        enriched = p.enrichment if isinstance(p.enrichment, EnrichmentResult) else None
        panel.show(p.knockout, enriched)
        calls = [Call(knockout, (p.fact,), {"window": p.knockout.window, "answer": None})]
        if enriched is not None:
            calls.append(Call(enrichment, (p.fact,), result="enriched"))
        panel.code.set(cell(self.state, calls))
        panel.task.status.value = (f"{PREPARED} (computed at set-up in {p.seconds.get('knockout', 0.0):.1f} s)"
                                   " — Run knockout to recompute")
