"""Fact panel: choose or type the fact to study; see what the model predicts now."""

from __future__ import annotations

import html

import ipywidgets as widgets

from workbench.editing import active_edits
from workbench.errors import WorkbenchError
from workbench.facts import Fact, Implication, bundled_facts, top_begins_true_object
from workbench.probing import probe
from workbench.snippets import Call, Code
from workbench.ui.code import cell
from workbench.ui.state import State
from workbench.ui.widgets import CodeView, ErrorLine, guarded, quoted, split_arrow, table, visible

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


#: The probe boxes, and the fields each kind's prompts are written for: a change to any of them
#: makes the box's prompts another fact's (a neighbour shares the true object, an implication
#: follows from the new one).
KINDS = {"paraphrases": ("subject", "prompt"), "neighbours": ("subject", "prompt", "true"),
         "implications": ("subject", "prompt", "true", "new")}
TITLES = {"paraphrases": "Paraphrases", "neighbours": "Neighbours", "implications": "Implications"}
#: One label width for the stacked probe boxes, so that they line up (the default cut "Implications").
BOX_LABEL = {"description_width": "90px"}


def _label(fact: Fact) -> str:
    new = f" → {fact.target_new}" if fact.target_new else ""
    return f"{fact.text} [{fact.target_true}{new}]"


class FactPanel(widgets.VBox):
    """Pick a fact from the examples and the bundled dataset, or type one.

    The probe boxes are the one source of the current fact's probes: each box remembers
    what the panel wrote into it and for which subject, relation and objects. When those
    fields change, a box the user has not edited is emptied and rewritten at "Use this
    fact" (the picked record's prompts, or suggestions for a typed fact); an edited box is
    kept, and the panel says so.
    """

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
        box = dict(rows=3, layout=widgets.Layout(width="95%"), style=BOX_LABEL)
        self.paraphrases = widgets.Textarea(description="Paraphrases", placeholder="one prompt per line", **box)
        self.paraphrases.add_class("wb-fact-paraphrases")
        self.neighbours = widgets.Textarea(description="Neighbours",
                                           placeholder="other subjects with the same true object, one per line", **box)
        self.neighbours.add_class("wb-fact-neighbours")
        self.implications = widgets.Textarea(description="Implications",
                                             placeholder="prompt → what it should continue with after the edit", **box)
        self.implications.add_class("wb-fact-implications")
        self.boxes = {"paraphrases": self.paraphrases, "neighbours": self.neighbours,
                      "implications": self.implications}
        #: kind -> (the text the panel last wrote into its box, the fields it was written for)
        self._written: dict[str, tuple[str, tuple]] = {kind: ("", ()) for kind in KINDS}
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
        self.code = CodeView("wb-fact-code")
        self._base: Fact | None = None  # the dataset fact the fields came from (keeps its probe prompts)

        self.search.observe(lambda _: self._filter(), "value")
        self._restoring = False
        for field in (self.subject, self.prompt, self.target_true, self.target_new):
            field.observe(lambda _: self._fields_changed(), "value")
        self.choices.observe(self._picked, "value")
        self.use.on_click(guarded(self.error, lambda _: self.apply()))
        # A fact is chosen whole or not at all: its list and button wait while a task holds the model.
        state.needs_model(self.use, self.choices)
        state.on("weights", guarded(self.error, self.refresh_predictions))
        self._filter()
        super().__init__([
            widgets.HTML("<b>Pick a fact</b> (examples first, then the bundled CounterFact facts the default model knows)"),
            self.search, self.choices,
            widgets.HTML("<b>…or type one</b> — the prompt holds <code>{}</code> where the subject goes"),
            widgets.HBox([self.subject, self.target_true, self.target_new]), self.prompt,
            widgets.HTML("<b>Probes of the edit</b> — what should change with it (paraphrases, implications) "
                         "and what should not (neighbours); edit any line, add lines of a kind to its box. "
                         "A box you have not edited follows the fact; one you edited is kept"),
            self.paraphrases, self.neighbours, self.implications,
            widgets.HBox([self.suggest_button, self.probe_note]),
            self.use, self.code, self.error, self.current, self.predictions,
        ])
        self.add_class("wb-fact-panel")

    # -- choosing -------------------------------------------------------------------
    def _filter(self) -> None:
        words = self.search.value.lower().split()
        matches = [(i, f) for i, f in enumerate(self.facts)
                   if all(w in _label(f).lower() for w in words)][:300]
        self.choices.options = [(_label(f), i) for i, f in matches]

    def _picked(self, change) -> None:
        # Not through `guarded` when there is nothing to do: its clearing would wipe the sentence
        # a refused pick has just written (unselecting the list calls this again).
        if change["new"] is None or self._restoring:
            return
        guarded(self.error, self.pick)(self.facts[change["new"]])

    def _busy_with(self) -> str | None:
        """The task that holds the model and does not give way (None: a fact can be chosen now)."""
        task = self.state.busy_task
        return None if task is None or task.preemptible else task.button.description

    def _refuse_busy(self, busy: str) -> None:
        current = self.state.fact
        stays = f" The current fact stays {current.text!r} → {current.target_true!r}." if current is not None else ""
        self.error.show(f"The model is busy ({busy}): choose the fact again when it is free.{stays}")

    def pick(self, fact: Fact) -> None:
        """Fill the fields from ``fact`` and make it current (or, with the model busy, change nothing)."""
        busy = self._busy_with()
        if busy is not None:
            self._refuse_busy(busy)
            self._unselect()
            return
        before = self._snapshot()
        self._base = fact
        self._restoring = True  # the fields change together: one rewrite of the boxes, below
        try:
            self.subject.value = fact.subject
            self.prompt.value = fact.prompt
            self.target_true.value = fact.target_true or ""
            self.target_new.value = fact.target_new or ""
        finally:
            self._restoring = False
        self._fill_probes(fact)
        self.probe_note.value = ""
        self.apply(undo=before)

    def _unselect(self) -> None:
        self._restoring = True
        try:
            self.choices.index = None
        except Exception:  # noqa: BLE001 - the list's highlight only
            pass
        finally:
            self._restoring = False

    def _snapshot(self) -> dict:
        """What a refused choice puts back: every field, box and what the boxes were written for."""
        return {"values": {w: w.value for w in (self.subject, self.prompt, self.target_true, self.target_new,
                                                 *self.boxes.values())},
                "base": self._base, "written": dict(self._written), "kinds": dict(self._kinds),
                "note": self.probe_note.value}

    def _restore(self, snap: dict) -> None:
        self._restoring = True
        try:
            for widget, value in snap["values"].items():
                widget.value = value
        finally:
            self._restoring = False
        self._base, self._written, self._kinds = snap["base"], snap["written"], snap["kinds"]
        self.probe_note.value = snap["note"]
        self._unselect()

    # -- the probe boxes ------------------------------------------------------------
    def _fields(self) -> dict[str, str]:
        return {"subject": self.subject.value.strip(), "prompt": self.prompt.value.strip(),
                "true": self.target_true.value.strip(), "new": self.target_new.value.strip()}

    def _key(self, kind: str, fields: dict | None = None) -> tuple:
        fields = fields or self._fields()
        return tuple(fields[f] for f in KINDS[kind])

    def _base_key(self, kind: str) -> tuple | None:
        base = self._base
        if base is None:
            return None
        fields = {"subject": base.subject.strip(), "prompt": base.prompt.strip(),
                  "true": (base.target_true or "").strip(), "new": (base.target_new or "").strip()}
        return self._key(kind, fields)

    def edited(self, kind: str) -> bool:
        """Whether the user changed ``kind``'s box since the panel last wrote it."""
        return self.boxes[kind].value.strip() != self._written[kind][0].strip()

    def _write(self, kind: str, text: str) -> None:
        self.boxes[kind].value = text
        self._written[kind] = (text, self._key(kind))

    @staticmethod
    def _texts(fact: Fact) -> dict[str, str]:
        return {"paraphrases": "\n".join(fact.paraphrase_prompts),
                "neighbours": "\n".join(fact.neighborhood_prompts),
                "implications": "\n".join(f"{i.prompt} → {i.target}" for i in fact.implication_prompts)}

    def _fill_probes(self, fact: Fact, *, only_empty: bool = False) -> None:
        """Write ``fact``'s probes into the boxes (``only_empty``: leave boxes that hold lines)."""
        for kind, text in self._texts(fact).items():
            if not (only_empty and self.boxes[kind].value.strip()):
                self._write(kind, text)
        if not only_empty:
            self._kinds = {}
        self._kinds.update({i.prompt: i.kind for i in fact.implication_prompts})

    def _stale(self, kind: str) -> bool:
        return self._written[kind][1] != self._key(kind)

    def _fields_changed(self) -> None:
        """Another subject, relation or object typed: the boxes written for the last one are
        about something else now. Unedited ones are emptied (rewritten at "Use this fact")."""
        if self._restoring:
            return
        emptied, kept = [], []
        for kind, box in self.boxes.items():
            if not self._stale(kind) or not box.value.strip():
                continue
            if self.edited(kind):
                kept.append(TITLES[kind])
            else:
                self._write(kind, "")
                emptied.append(TITLES[kind])
        if emptied or kept:
            self.probe_note.value = "<span style='color:#555'>" + html.escape(self._changed_note(emptied, kept)) + "</span>"

    @staticmethod
    def _changed_note(emptied: list[str], kept: list[str]) -> str:
        parts = []
        if emptied:
            parts.append(f"{', '.join(emptied)}: written for the last fact, emptied; new prompts follow at "
                         "'Use this fact'")
        if kept:
            parts.append(f"{', '.join(kept)}: kept as you edited {'it' if len(kept) == 1 else 'them'} "
                         "(written for the last fact: check the lines still fit)")
        return "; ".join(parts)

    def _refresh_probes(self) -> list[str]:
        """Rewrite every box that is empty, or unedited and written for other fields, from the
        picked record when the fields are still its own, else from suggestions. Returns notes."""
        notes: list[str] = []
        rewrite = [k for k in KINDS if not self.boxes[k].value.strip() or (self._stale(k) and not self.edited(k))]
        kept = [TITLES[k] for k in KINDS if self._stale(k) and self.edited(k) and self.boxes[k].value.strip()]
        from_base = [k for k in rewrite if self._base_key(k) == self._key(k)]
        if from_base:
            texts = self._texts(self._base)
            for kind in from_base:
                self._write(kind, texts[kind])
            self._kinds.update({i.prompt: i.kind for i in self._base.implication_prompts})
        others = [k for k in rewrite if k not in from_base]
        if others:
            for kind in others:
                self._write(kind, "")
            notes += self.suggest()
        for kind in KINDS:
            if self.boxes[kind].value.strip() and not self.edited(kind):
                self._written[kind] = (self._written[kind][0], self._key(kind))
        if kept:
            notes.append(f"{', '.join(kept)}: kept as you edited {'it' if len(kept) == 1 else 'them'}")
            for kind in KINDS:
                if TITLES[kind] in kept:  # now the user's prompts for these fields
                    self._written[kind] = (self._written[kind][0], self._key(kind))
        return notes

    def suggest(self) -> list[str]:
        """Fill the empty probe boxes for the fact in the fields (see :func:`workbench.evaluation.suggest.suggest`)."""
        from workbench.evaluation.suggest import suggest

        found = suggest(self.fact_from_fields())
        self._fill_probes(found.fact, only_empty=True)
        notes = list(found.notes) or ["every probe box already has prompts"]
        self.probe_note.value = "<span style='color:#555'>" + html.escape("; ".join(notes)) + "</span>"
        return notes

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

    def apply(self, *, undo: dict | None = None) -> None:
        """Make the fields' fact current, whole: its probes, its predictions, then the other panels.

        With the model busy nothing changes (``undo``: what a pick puts back then).
        """
        self.error.clear()
        before = undo if undo is not None else self._snapshot()
        busy = self._busy_with()
        if busy is not None:
            self._restore(before)
            self._refuse_busy(busy)
            return
        try:
            self.fact_from_fields()  # the fields' own errors first
            notes = self._refresh_probes()
            fact = self.fact_from_fields()
        except WorkbenchError as exc:
            self.error.show(exc)
            return
        if notes:
            self.probe_note.value = "<span style='color:#555'>" + html.escape("; ".join(notes)) + "</span>"
        try:
            # The model's answer first: a model that a task holds refuses it, and then nothing
            # has changed (not "Current fact" while the header and the other tabs keep the last).
            result, edits = self._probe(fact)
        except WorkbenchError as exc:
            self._restore(before)
            self.error.show(f"{exc} The current fact was not changed." if "busy" in str(exc) else exc)
            return
        self.current.value = (f"Current fact: <i>{html.escape(fact.text)}</i> → "
                              f"<b>{html.escape(fact.target_true or '?')}</b>"
                              + (f" (edit towards <b>{html.escape(fact.target_new)}</b>)" if fact.target_new else ""))
        # What this tab shows first (one prompt, a fraction of a second); the other panels'
        # probes follow the "fact" event.
        self._show_predictions(fact, result, edits)
        self.state.set_fact(fact)

    def _probe(self, fact: Fact):
        targets = [t for t in (fact.target_true, fact.target_new) if t]
        with self.state.using() as model:
            result = probe(model, fact.text, targets=targets or None, top_k=5)[0]
            edits = len(active_edits(model))
            # The whole fact: this tab is where it is made, probe prompts and all.
            call = Call(probe, (Code("fact.text"),), {"targets": targets or None, "top_k": 5})
            self.code.set(cell(self.state, call, fact=fact, whole=True))
        return result, edits

    def refresh_predictions(self, fact: Fact | None = None) -> None:
        fact = fact if fact is not None else self.state.fact
        if fact is None:
            self.predictions.value = ""
            return
        self._show_predictions(fact, *self._probe(fact))

    def _show_predictions(self, fact: Fact, result, edits: int) -> None:
        rows = [{"token": visible(t.token), "p": t.prob} for t in result.top]
        target_rows = [{"target": t.target, "tokens": len(t.token_probs) or None, "p": t.prob, "rank": t.rank}
                       for t in result.targets]
        note = f" (with {edits} edit{'s' if edits != 1 else ''} applied)" if edits else ""
        self.predictions.value = (
            self._knows_line(fact, result, edits)
            + f"<b>The model's top next tokens now{note}</b>"
            + table(rows, ["token", "p"], css="wb-fact-top", formats={"p": ".3f"})
            + (table(target_rows, ["target", "tokens", "p", "rank"], css="wb-fact-targets", formats={"p": ".4f"},
                     headers={"p": "p per token (geometric mean)", "rank": "rank of its first token"})
               if target_rows else "")
        )

    def _scored(self, fact: Fact, target) -> str:
        """A target's rank and probability, each labelled as what it is: the rank is its first
        token's among the next tokens; p is per token, a geometric mean when it has several."""
        n = len(target.token_probs) or 1
        p = (f"p {target.prob:.3f}" if n == 1 else
             f"p per token {target.prob:.3f} (geometric mean over its {n} tokens)")
        return f"{target.target!r}: first token ranked {target.rank} among the next tokens, {p}"

    def _knows_line(self, fact: Fact, result, edits: int) -> str:
        """Whether the model knows the fact now: its top answer, the true object's rank and p."""
        if fact.target_true is None or edits:
            return ""
        true = result.target(fact.target_true)
        top = result.top[0].token if result.top else ""
        known = top_begins_true_object(self.state.model, fact, top) if top else False
        new = result.target(fact.target_new) if fact.target_new else None
        facts = self._scored(fact, true) + (f"; {self._scored(fact, new)}" if new is not None else "")
        if known and (new is None or true.prob > new.prob):
            return (f"<div class='wb-fact-knows' style='color:#1b5e20'>The model knows this fact: its top answer "
                    f"is {html.escape(quoted(top))}; {html.escape(facts)}.</div>")
        why = (f"its top answer is {quoted(top)}, not {fact.target_true!r}" if not known else
               f"it already prefers {fact.target_new!r} to {fact.target_true!r}")
        return (f"<div class='wb-fact-knows wb-fact-unknown' style='color:#8a4b00;font-weight:bold'>"
                f"⚠ The model does not know this fact: {html.escape(why)} ({html.escape(facts)}). "
                "An edit of it would be judged against an answer the model never gave; pick a fact it "
                "knows (the bundled ones are).</div>")
