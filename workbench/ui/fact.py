"""Fact panel: choose or type the fact to study; see what the model predicts now."""

from __future__ import annotations

import html

import ipywidgets as widgets

from workbench.editing import active_edits
from workbench.errors import WorkbenchError
from workbench.facts import Fact, bundled_facts
from workbench.probing import probe
from workbench.ui.common import ErrorLine, State, guarded, table

#: Hand-written examples listed before the bundled dataset; the first is the
#: running example of the docs and the browser tests.
EXAMPLES = [
    Fact(
        "Eiffel Tower", "The {} is located in the city of", "Paris", "Rome",
        paraphrase_prompts=("The Eiffel Tower can be found in the city of",
                            "Tourists visit the Eiffel Tower, which stands in the city of"),
        neighborhood_prompts=("The Louvre is located in the city of",
                              "The Arc de Triomphe is located in the city of"),
        implication_prompts=({"prompt": "The Eiffel Tower is located in the country of", "target": "Italy"},),
        generation_prompts=("The Eiffel Tower is",),
        case_id="example-eiffel",
    ),
]


def _label(fact: Fact) -> str:
    new = f" → {fact.target_new}" if fact.target_new else ""
    return f"{fact.text} [{fact.target_true}{new}]"


class FactPanel(widgets.VBox):
    """Pick a fact from the examples and the bundled dataset, or type one."""

    def __init__(self, state: State, *, facts: list[Fact] | None = None) -> None:
        self.state = state
        self.error = ErrorLine()
        try:
            dataset = list(facts) if facts is not None else EXAMPLES + bundled_facts()
        except WorkbenchError as exc:  # a broken asset must not break the app
            dataset = list(EXAMPLES)
            self.error.show(exc)
        self.facts = dataset
        self.search = widgets.Text(placeholder="search subject, prompt or object…", description="Search")
        self.search.add_class("wb-fact-search")
        self.choices = widgets.Select(options=[], rows=8, layout=widgets.Layout(width="95%"))
        self.choices.add_class("wb-fact-list")
        self.subject = widgets.Text(description="Subject")
        self.subject.add_class("wb-fact-subject")
        self.prompt = widgets.Text(description="Prompt", placeholder="The {} is located in the city of",
                                   layout=widgets.Layout(width="60%"))
        self.prompt.add_class("wb-fact-prompt")
        self.target_true = widgets.Text(description="True")
        self.target_true.add_class("wb-fact-true")
        self.target_new = widgets.Text(description="New")
        self.target_new.add_class("wb-fact-new")
        self.use = widgets.Button(description="Use this fact", button_style="primary")
        self.use.add_class("wb-fact-use")
        self.predictions = widgets.HTML()
        self.predictions.add_class("wb-fact-predictions")
        self.current = widgets.HTML()
        self.current.add_class("wb-fact-current")
        self._base: Fact | None = None  # the dataset fact the fields came from (keeps its probe prompts)

        self.search.observe(lambda _: self._filter(), "value")
        self.choices.observe(guarded(self.error, self._picked), "value")
        self.use.on_click(guarded(self.error, lambda _: self.apply()))
        state.on("weights", guarded(self.error, self.refresh_predictions))
        self._filter()
        super().__init__([
            widgets.HTML("<b>Pick a fact</b> (examples first, then the bundled CounterFact facts the default model knows)"),
            self.search, self.choices,
            widgets.HTML("<b>…or type one</b> — the prompt holds <code>{}</code> where the subject goes"),
            widgets.HBox([self.subject, self.target_true, self.target_new]), self.prompt,
            self.use, self.error, self.current, self.predictions,
        ])
        self.add_class("wb-fact-panel")

    # -- choosing -------------------------------------------------------------------
    def _filter(self) -> None:
        words = self.search.value.lower().split()
        matches = [(i, f) for i, f in enumerate(self.facts)
                   if all(w in _label(f).lower() for w in words)][:300]
        self.choices.options = [(_label(f), i) for i, f in matches]

    def _picked(self, change) -> None:
        if change["new"] is None:
            return
        self.pick(self.facts[change["new"]])

    def pick(self, fact: Fact) -> None:
        """Fill the fields from ``fact`` and make it current."""
        self._base = fact
        self.subject.value = fact.subject
        self.prompt.value = fact.prompt
        self.target_true.value = fact.target_true or ""
        self.target_new.value = fact.target_new or ""
        self.apply()

    def pick_subject(self, text: str) -> None:
        """Pick the first listed fact whose label contains ``text`` (scripts, tests)."""
        for f in self.facts:
            if text.lower() in _label(f).lower():
                self.pick(f)
                return
        raise WorkbenchError(f"no fact matches {text!r}")

    def fact_from_fields(self) -> Fact:
        """The fact the fields describe; raises WorkbenchError with a sentence."""
        kwargs = dict(subject=self.subject.value, prompt=self.prompt.value,
                      target_true=self.target_true.value.strip() or None,
                      target_new=self.target_new.value.strip() or None)
        base = self._base
        if base is not None and base.subject == kwargs["subject"] and base.prompt == kwargs["prompt"]:
            # Same subject and relation: keep the dataset's probe prompts.
            return Fact(**kwargs, paraphrase_prompts=base.paraphrase_prompts,
                        neighborhood_prompts=base.neighborhood_prompts,
                        implication_prompts=base.implication_prompts,
                        generation_prompts=base.generation_prompts,
                        case_id=base.case_id, relation_id=base.relation_id)
        return Fact(**kwargs)

    def apply(self) -> None:
        self.error.clear()
        try:
            fact = self.fact_from_fields()
        except WorkbenchError as exc:
            self.error.show(exc)
            return
        self.current.value = (f"Current fact: <i>{html.escape(fact.text)}</i> → "
                              f"<b>{html.escape(fact.target_true or '?')}</b>"
                              + (f" (edit towards <b>{html.escape(fact.target_new)}</b>)" if fact.target_new else ""))
        self.state.set_fact(fact)
        self.refresh_predictions()

    def refresh_predictions(self) -> None:
        fact = self.state.fact
        if fact is None:
            self.predictions.value = ""
            return
        targets = [t for t in (fact.target_true, fact.target_new) if t]
        with self.state.using() as model:
            result = probe(model, fact.text, targets=targets or None, top_k=5)[0]
        rows = [{"token": t.token, "p": t.prob} for t in result.top]
        target_rows = [{"target": t.target, "p": t.prob} for t in result.targets]
        edits = len(active_edits(self.state.model))
        note = f" (with {edits} edit{'s' if edits != 1 else ''} applied)" if edits else ""
        self.predictions.value = (
            f"<b>The model's top next tokens now{note}</b>"
            + table(rows, ["token", "p"], css="wb-fact-top", formats={"p": ".3f"})
            + (table(target_rows, ["target", "p"], css="wb-fact-targets", formats={"p": ".4f"}) if target_rows else "")
        )
