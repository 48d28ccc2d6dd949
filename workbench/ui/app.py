"""The workbench app: connected panels in tabs around one model.

Example:
    >>> import workbench as wb
    >>> app = wb.Workbench()          # loads gemma-3-270m; display it in a notebook
    >>> app                           # doctest: +SKIP
"""

from __future__ import annotations

import html
import os

import ipywidgets as widgets

from workbench.ui.state import BusyLine, State
from workbench.ui.widgets import ErrorLine, sentence

TABS = ("fact", "trace", "memories", "edit", "probes", "compare", "knockout")
TITLES = {"fact": "Fact", "trace": "Trace", "memories": "Memories", "edit": "Edit", "probes": "Probes",
          "compare": "Compare", "knockout": "Knockout"}


class Workbench(widgets.VBox):
    """Locate and edit a fact in one app: Fact → Trace → Memories → Edit → Probes → Compare.

    Args:
        model: a loaded :class:`~workbench.core.model.Model`, a model name, or None for
            the default model (``gemma-3-270m``).
        fact: the fact to start with (default: the Eiffel Tower example).
        facts: the facts to pick from (default: examples + bundled dataset).
        background: run long work in threads (False runs it inline: scripts, tests).
        lesson: start in lesson mode (step cards over facts prepared ahead, :mod:`workbench.ui.lesson`);
            a :class:`~workbench.ui.lesson.Lesson` to use that one; None: on when the environment sets
            ``WORKBENCH_LESSON=1`` (`workbench app --lesson`). The "Lesson" switch is there either way.
        answers: start with the Probes tab's "Greedy answers after each probe" on (the default) or
            off; off, the first fact is not answered by generation (seconds on a slow CPU).

    Attributes:
        state: what the panels share (model, fact, trace, selection, edit history).
        fact, trace, memories, edit, probes, compare: the panels.
        lesson: the lesson strip (None if it could not be built; an error line says why).
    """

    def __init__(self, model=None, *, fact=None, facts=None, background: bool = True, lesson=None,
                 answers: bool = True) -> None:
        from workbench.core.model import Model, load_model

        if model is None or isinstance(model, str):
            model = _load_quietly(load_model, model)
        elif not isinstance(model, Model):
            from workbench.errors import WorkbenchError

            raise WorkbenchError(f"model must be a Model, a model name or None, got {type(model).__name__}")
        self.model = model
        self.state = State(model)
        self.header = widgets.HTML()
        self.header.add_class("wb-header")
        # One busy line for the whole app: what holds the model, for how long, and its Cancel.
        self.busy_line = BusyLine(self.state, where=self._tab_of)
        self.busy, self.busy_cancel = self.busy_line.text, self.busy_line.cancel_button
        # Before the panels' listeners: theirs recompute (predictions, probes), and the header
        # would otherwise show the old edit count for the seconds they take (issue 41).
        self.state.on("weights", self._update_header)
        self.state.on("fact", self._update_header)
        self.panels: dict[str, widgets.Widget] = {}
        builders = self._builders(facts, background, answers)
        for name in TABS:
            try:
                panel = builders[name]()
            except Exception as exc:  # noqa: BLE001 - one broken panel must not take the app down
                line = ErrorLine()
                line.show(exc)
                panel = widgets.VBox([widgets.HTML(f"<b>The {TITLES[name]} panel is not available.</b>"), line])
                panel.add_class(f"wb-{name}-panel")
            self.panels[name] = panel
            setattr(self, name, panel)
        self.tabs = widgets.Tab(children=[self.panels[n] for n in TABS])
        for i, name in enumerate(TABS):
            self.tabs.set_title(i, TITLES[name])
        self.tabs.add_class("wb-tabs")
        self.state.select_tab = self.show_tab
        # A tiny figure out of sight: the browser loads and starts plotly.js while the class
        # reads the Fact tab, not on the first trace.
        warm = _warm_figures()
        # After the panels: its "fact" listener fills them from the lesson once they have cleared.
        self.lesson, lesson_box = self._lesson_strip(lesson)
        super().__init__([self.header, self.busy_line, lesson_box,
                          self.tabs, *([warm] if warm is not None else [])])
        self.add_class("wb-app")
        self._update_header()
        edit_panel = self.panels.get("edit")
        _prepare_edits(model, getattr(getattr(edit_panel, "method", None), "value", None))
        if fact is not None or hasattr(self.fact, "pick"):
            try:
                if fact is not None:
                    self.fact.pick(fact)
                elif self.fact.facts:
                    self.fact.pick(self.fact.facts[0])
            except Exception as exc:  # noqa: BLE001
                self.fact.error.show(exc)

    def _builders(self, facts, background: bool, answers: bool):
        from workbench.ui.compare import ComparePanel
        from workbench.ui.edit import EditPanel
        from workbench.ui.fact import FactPanel
        from workbench.ui.knockout import KnockoutPanel
        from workbench.ui.memories import MemoriesPanel
        from workbench.ui.probes import ProbesPanel
        from workbench.ui.trace import TracePanel

        s = self.state
        return {
            "fact": lambda: FactPanel(s, facts=facts),
            "trace": lambda: TracePanel(s, background=background),
            "memories": lambda: MemoriesPanel(s, background=background),
            "edit": lambda: EditPanel(s, background=background),
            "probes": lambda: ProbesPanel(s, background=background, answers=answers),
            "compare": lambda: ComparePanel(s, facts=facts, background=background),
            "knockout": lambda: KnockoutPanel(s, background=background),
        }

    def _lesson_strip(self, lesson) -> tuple[widgets.Widget | None, widgets.Widget]:
        """(the lesson strip, what to show for it): an error line in its place when it cannot be
        built, for the app works without it."""
        from workbench.ui.lesson import Lesson
        from workbench.ui.lesson_strip import LessonStrip

        try:
            on = os.environ.get("WORKBENCH_LESSON") == "1" if lesson is None else bool(lesson)
            strip = LessonStrip(self, lesson if isinstance(lesson, Lesson) else None, on=on)
        except Exception as exc:  # noqa: BLE001 - a broken lesson must not take the app down
            line = ErrorLine()
            line.show(exc)
            line.add_class("wb-lesson-error")
            return None, line
        edit_panel = self.panels.get("edit")
        if hasattr(edit_panel, "prepared"):
            # Apply loads the edit set-up saved for a lesson fact, in lesson mode only.
            edit_panel.prepared = strip.prepared_edit
        probes = self.panels.get("probes")
        if hasattr(probes, "hold_answers"):
            probes.hold_answers = strip.holds_answers  # in lesson mode, until the Probes tab opens
        knowledge = getattr(probes, "knowledge", None)
        if knowledge is not None:
            knowledge.prepared = strip.prepared_letters  # the letters "now" on that loaded edit
        return strip, strip

    def show_tab(self, name: str) -> None:
        self.tabs.selected_index = TABS.index(name)

    @staticmethod
    def tab_name(index: int | None) -> str | None:
        """The panel name of tab ``index`` (None for none)."""
        return TABS[index] if index is not None and 0 <= index < len(TABS) else None

    def _tab_of(self, task) -> str:
        """The title of the tab whose panel holds ``task``'s button ("" if none)."""
        return next((TITLES[n] for n, p in self.panels.items() if _holds(p, task)), "")

    def _update_header(self) -> None:
        from workbench.editing import active_edits

        try:
            n = len(active_edits(self.model))
        except Exception as exc:  # noqa: BLE001
            n = f"? ({sentence(exc)})"
        fact = self.state.fact
        self.header.value = (
            f"<b>Knowledge Workbench</b> · model <code>{html.escape(self.model.name)}</code> "
            f"({self.model.n_layers} layers) · edits applied: <b class='wb-edit-count'>{n}</b>"
            + (f" · fact: <i>{html.escape(fact.text)}</i> → {html.escape(fact.target_true or '?')}" if fact else "")
        )


def _holds(widget, task) -> bool:
    """Whether ``task`` is inside ``widget``'s children (depth-first)."""
    if widget is task:
        return True
    return any(_holds(child, task) for child in getattr(widget, "children", ()) or ())


def _load_quietly(load_model, name):
    """Load the model without Hugging Face's "Loading weights" bar, which would stay on the page above the app."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        return load_model(name) if name else load_model()
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return load_model(name) if name else load_model()
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _prepare_edits(model, method: str | None) -> None:
    """The default edit method's one-time costs, paid while the app loads (ROME: 0.4-0.7 s of
    its first Apply), with key statistics only from disk (`workbench app` computed them)."""
    from workbench.editing import prepare

    if not method:
        return
    try:
        prepare(model, method, compute_statistics=False)
    except Exception:  # noqa: BLE001 - a head start only: the first Apply reports its own error
        pass


def _warm_figures():
    """Build one plotly FigureWidget now, in a box of no height: the first costs about 2 s here
    (measured on this CPU) and the browser's first plotly figure more, which would otherwise land
    on the first trace a class waits for, not on the app's start. None if plotly is missing."""
    try:
        import plotly.graph_objects as go

        fig = go.FigureWidget(go.Heatmap(z=[[0.0]], showscale=False),
                              layout=dict(width=20, height=20, margin=dict(l=0, r=0, t=0, b=0)))
    except Exception:  # noqa: BLE001 - a warm-up only
        return None
    box = widgets.Box([fig], layout=widgets.Layout(height="0px", overflow="hidden"))
    box.add_class("wb-warm-figure")
    return box
