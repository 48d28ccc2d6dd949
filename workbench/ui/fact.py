"""Fact panel: choose or type the fact to study; see what the model predicts now."""

from __future__ import annotations

import html

import ipywidgets as widgets

from workbench.editing import active_edits
from workbench.errors import WorkbenchError
from workbench.facts import Fact, Implication, bundled_facts, top_begins_true_object
from workbench.probing import probe
from workbench.ui.common import ErrorLine, State, guarded, split_arrow, table

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
        # The probe prompts of each kind, one per line, editable: a dataset fact fills them
        # from its record, a typed one from the relation's templates and the bundled data.
        box = dict(rows=3, layout=widgets.Layout(width="95%"))
        self.paraphrases = widgets.Textarea(description="Paraphrases", placeholder="one prompt per line", **box)
        self.paraphrases.add_class("wb-fact-paraphrases")
        self.neighbours = widgets.Textarea(description="Neighbours",
                                           placeholder="other subjects with the same true object, one per line", **box)
        self.neighbours.add_class("wb-fact-neighbours")
        self.implications = widgets.Textarea(description="Implications",
                                             placeholder="prompt → what it should continue with after the edit", **box)
        self.implications.add_class("wb-fact-implications")
        self.suggest_button = widgets.Button(description="Suggest probes", layout=widgets.Layout(width="170px", min_width="170px"),
                                             tooltip="fill the empty probe boxes from the relation's templates, "
                                                     "the bundled facts and the knowledge table")
        self.suggest_button.add_class("wb-fact-suggest")
        self.suggest_button.on_click(guarded(self.error, lambda _: self.suggest()))
        self.probe_note = widgets.HTML()
        self.probe_note.add_class("wb-fact-probe-note")
        self._kinds: dict[str, str] = {}  # implication prompt -> its kind, for lines kept as they were
        self.use = widgets.Button(description="Use this fact", button_style="primary")
        self.use.add_class("wb-fact-use")
        self.predictions = widgets.HTML()
        self.predictions.add_class("wb-fact-predictions")
        self.current = widgets.HTML()
        self.current.add_class("wb-fact-current")
        self._base: Fact | None = None  # the dataset fact the fields came from (keeps its probe prompts)

        self.search.observe(lambda _: self._filter(), "value")
        self._from_base = False  # the probe boxes hold the picked fact's own prompts, unedited
        for field in (self.subject, self.prompt):
            field.observe(lambda _: self._fields_changed(), "value")
        self.choices.observe(guarded(self.error, self._picked), "value")
        self.use.on_click(guarded(self.error, lambda _: self.apply()))
        state.needs_model(self.use)
        state.on("weights", guarded(self.error, self.refresh_predictions))
        self._filter()
        super().__init__([
            widgets.HTML("<b>Pick a fact</b> (examples first, then the bundled CounterFact facts the default model knows)"),
            self.search, self.choices,
            widgets.HTML("<b>…or type one</b> — the prompt holds <code>{}</code> where the subject goes"),
            widgets.HBox([self.subject, self.target_true, self.target_new]), self.prompt,
            widgets.HTML("<b>Probes of the edit</b> — what should change with it (paraphrases, implications) "
                         "and what should not (neighbours); edit any line, add lines of a kind to its box"),
            self.paraphrases, self.neighbours, self.implications,
            widgets.HBox([self.suggest_button, self.probe_note]),
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
        self._fill_probes(fact)
        self._from_base = True
        self.probe_note.value = ""
        self.apply()

    def _fill_probes(self, fact: Fact, *, only_empty: bool = False) -> None:
        """Write ``fact``'s probes into the boxes (``only_empty``: leave boxes that hold lines)."""
        texts = {self.paraphrases: "\n".join(fact.paraphrase_prompts),
                 self.neighbours: "\n".join(fact.neighborhood_prompts),
                 self.implications: "\n".join(f"{i.prompt} → {i.target}" for i in fact.implication_prompts)}
        for box, text in texts.items():
            if not (only_empty and box.value.strip()):
                box.value = text
        if not only_empty:
            self._kinds = {}
        self._kinds.update({i.prompt: i.kind for i in fact.implication_prompts})

    def _fields_changed(self) -> None:
        """Another subject or relation typed: the picked fact's probes are about something else now."""
        if self._from_base and self._typed():
            self._from_base = False
            self.paraphrases.value = self.neighbours.value = self.implications.value = ""
            self.probe_note.value = ""

    def suggest(self) -> None:
        """Fill the empty probe boxes for the fact in the fields (see :func:`workbench.evaluation.suggest.suggest`)."""
        from workbench.evaluation.suggest import suggest

        found = suggest(self.fact_from_fields())
        self._fill_probes(found.fact, only_empty=True)
        self.probe_note.value = ("<span style='color:#555'>" + html.escape("; ".join(found.notes) or
                                 "every probe box already has prompts") + "</span>")

    def pick_subject(self, text: str) -> None:
        """Pick the first listed fact whose label contains ``text`` (scripts, tests)."""
        for f in self.facts:
            if text.lower() in _label(f).lower():
                self.pick(f)
                return
        raise WorkbenchError(f"no fact matches {text!r}")

    def _implication_lines(self) -> list[Implication]:
        out = []
        for n, line in enumerate(self.implications.value.splitlines(), 1):
            if not line.strip():
                continue
            prompt, target = split_arrow(line)
            if not prompt or not target:
                raise WorkbenchError(f"implication line {n} ({line!r}) needs a prompt and its target: "
                                     "'The Eiffel Tower is in the country of → Italy'")
            out.append(Implication(prompt, target, self._kinds.get(prompt, "")))
        return out

    def fact_from_fields(self) -> Fact:
        """The fact the fields describe; raises WorkbenchError with a sentence."""
        if not self.target_true.value.strip():
            raise WorkbenchError("type the true object: what the model should answer before any edit")
        lines = lambda box: tuple(x.strip() for x in box.value.splitlines() if x.strip())  # noqa: E731
        kwargs = dict(subject=self.subject.value, prompt=self.prompt.value,
                      target_true=self.target_true.value.strip(),
                      target_new=self.target_new.value.strip() or None,
                      paraphrase_prompts=lines(self.paraphrases), neighborhood_prompts=lines(self.neighbours),
                      implication_prompts=tuple(self._implication_lines()))
        base = self._base
        if not self._typed():
            # Same subject and relation: keep the dataset's generation prompts and ids.
            return Fact(**kwargs, generation_prompts=base.generation_prompts,
                        case_id=base.case_id, relation_id=base.relation_id)
        return Fact(**kwargs)

    def _typed(self) -> bool:
        base = self._base
        return base is None or base.subject != self.subject.value or base.prompt != self.prompt.value

    def apply(self) -> None:
        self.error.clear()
        try:
            if self._typed() and not (self.paraphrases.value.strip() and self.neighbours.value.strip()
                                      and self.implications.value.strip()):
                # A typed fact gets real probes, not a single row: fill what is empty.
                self.fact_from_fields()  # the fields' own errors first
                self.suggest()
            fact = self.fact_from_fields()
        except WorkbenchError as exc:
            self.error.show(exc)
            return
        self.current.value = (f"Current fact: <i>{html.escape(fact.text)}</i> → "
                              f"<b>{html.escape(fact.target_true or '?')}</b>"
                              + (f" (edit towards <b>{html.escape(fact.target_new)}</b>)" if fact.target_new else ""))
        # What this tab shows first (one prompt, a fraction of a second); the other panels'
        # probes follow the "fact" event.
        self.refresh_predictions(fact)
        self.state.set_fact(fact)

    def refresh_predictions(self, fact: Fact | None = None) -> None:
        fact = fact if fact is not None else self.state.fact
        if fact is None:
            self.predictions.value = ""
            return
        targets = [t for t in (fact.target_true, fact.target_new) if t]
        with self.state.using() as model:
            result = probe(model, fact.text, targets=targets or None, top_k=5)[0]
        rows = [{"token": t.token, "p": t.prob} for t in result.top]
        target_rows = [{"target": t.target, "p": t.prob, "rank": t.rank} for t in result.targets]
        edits = len(active_edits(self.state.model))
        note = f" (with {edits} edit{'s' if edits != 1 else ''} applied)" if edits else ""
        self.predictions.value = (
            self._knows_line(fact, result, edits)
            + f"<b>The model's top next tokens now{note}</b>"
            + table(rows, ["token", "p"], css="wb-fact-top", formats={"p": ".3f"})
            + (table(target_rows, ["target", "p", "rank"], css="wb-fact-targets", formats={"p": ".4f"},
                     headers={"rank": "rank of its first token"}) if target_rows else "")
        )

    def _knows_line(self, fact: Fact, result, edits: int) -> str:
        """Whether the model knows the fact now: its top answer, the true object's rank and p."""
        if fact.target_true is None or edits:
            return ""
        true = result.target(fact.target_true)
        top = result.top[0].token if result.top else ""
        known = top_begins_true_object(self.state.model, fact, top) if top else False
        new = result.target(fact.target_new) if fact.target_new else None
        facts = (f"{fact.target_true!r} is rank {true.rank} with p {true.prob:.3f}"
                 + (f"; {fact.target_new!r} has p {new.prob:.3f}" if new is not None else ""))
        if known and (new is None or true.prob > new.prob):
            return (f"<div class='wb-fact-knows' style='color:#1b5e20'>The model knows this fact: its top answer "
                    f"is {html.escape(repr(top))}; {html.escape(facts)}.</div>")
        why = (f"its top answer is {top!r}, not {fact.target_true!r}" if not known else
               f"it already prefers {fact.target_new!r} to {fact.target_true!r}")
        return (f"<div class='wb-fact-knows wb-fact-unknown' style='color:#8a4b00;font-weight:bold'>"
                f"⚠ The model does not know this fact: {html.escape(why)} ({html.escape(facts)}). "
                "An edit of it would be judged against an answer the model never gave; pick a fact it "
                "knows (the bundled ones are).</div>")
