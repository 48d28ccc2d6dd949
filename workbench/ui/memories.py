"""Memories panel: the FFN at one (token, layer) as a key-value memory.

A table of the largest sub-updates ``m_i v_i`` (coefficient, value norm, the
tokens it promotes, how much it pushes the fact's answer), sortable by weight or
by that push, and a chart of the same rows in the same order; a line on what the
subject's representation carries at the layer (logit lens and attribute rate);
a key's button shows its profile; Suppress / Amplify toggles re-probe the fact
with those keys' coefficients changed (no weights written); and a
knowledge-neuron search with its attribution chart.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from workbench.errors import WorkbenchError
from workbench.figures.memories import readable, shown_tokens
from workbench.locate import enrichment, intervene, key_profile, knowledge_neurons, memories
from workbench.probing import probe
from workbench.snippets import Call, Code, literal
from workbench.ui.code import cell
from workbench.ui.state import State, Task
from workbench.ui.widgets import ClampedIntText, CodeView, ErrorLine, guarded, parse_ints, quoted, table, visible
from workbench.ui.figures import neuron_figure, sub_update_figure

AMPLIFY = 2.0
#: Keys the table lists by default (the lesson is prepared with it: workbench/ui/lesson.py).
DEFAULT_KEYS = 12


#: What each column of the memories table means (shown on hover over its header).
COLUMN_HELP = {
    "key": "the FFN neuron's index i: its input weights are the key k_i matched against the hidden state; "
           "click for its profile",
    "coefficient": "m_i, how strongly this prompt's hidden state matches the key (after the activation); "
                   "negative flips the value vector",
    "|v|": "the norm of the value vector v_i (the neuron's column of the output matrix)",
    "weight": "|m_i|·|v_i|: the size of this sub-update's contribution to the FFN's output here",
    "promotes": "the tokens whose logits m_i·v_i raises most (its value read through the unembedding)",
    "pushes": "m_i·v_i's direct contribution to the answer's logit: the sub-update read through the final "
              "norm (with the scale it has on this token's final residual) and the answer's unembedding row, "
              "leaving out what later layers make of it. At a token other than the last it is what the "
              "sub-update would add to the answer's logit if it were read out directly at this position; "
              "the model reads its answer at the last token only",
}

#: The table's columns: (COLUMN_HELP key, header); the push column's header names the answer.
COLUMNS = (("key", "key"), ("coefficient", "coefficient"), ("|v|", "|v|"), ("weight", "weight"),
           ("promotes", "promotes"), ("pushes", "pushes {answer} by"), ("", ""))

#: Why a sub-update at the subject can promote odd tokens (issue 41): shown under the table.
SUBJECT_NOTE = ("Why sub-updates at the subject's tokens often promote odd tokens: what the FFN writes there "
                "is not read out as the next word at that position; attention heads in later layers read it "
                "and carry it to the last token, so its value vector seen through the unembedding can look "
                "unrelated to the fact.")


def _tokens(scores, n: int = 6, *, only_readable: bool = False) -> str:
    return " ".join(quoted(t.token) for t in shown_tokens(scores, n, only_readable=only_readable))


class MemoriesPanel(widgets.VBox):
    def __init__(self, state: State, *, background: bool = True) -> None:
        self.state = state
        self.error = ErrorLine()
        # Not a BoundedIntText: that clamps 25 to 17 silently, and the field and the table then disagree.
        self.layer = widgets.IntText(value=0, description="Layer")
        self.layer.add_class("wb-memory-layer")
        self.position = widgets.Dropdown(options=[], description="Token")
        self.position.add_class("wb-memory-position")
        self.top_k = ClampedIntText(value=DEFAULT_KEYS, lo=1, hi=200, description="Keys")
        self.top_k.add_class("wb-memory-keys")
        self.readable_only = widgets.Checkbox(value=True, indent=False, description="readable tokens only",
                                              tooltip="hide tokens with no letters or digits, control "
                                                      "characters and missing glyphs")
        self.readable_only.add_class("wb-memory-readable")
        self.readable_only.observe(lambda _: self.report is not None and self.show(self.report), "value")
        # Sorting only reorders what is shown (table and chart alike); nothing is recomputed.
        self.sort = widgets.Dropdown(options=[("weight |m|·|v|", "weight"), ("push on the answer", "answer_push")],
                                     value="weight", description="Sort by",
                                     layout=widgets.Layout(width="260px"))
        self.sort.add_class("wb-memory-sort")
        self.sort.observe(lambda _: self.report is not None and self.show(self.report), "value")
        self.show_button = widgets.Button(description="Show memories", button_style="primary")
        self.show_button.add_class("wb-memory-run")
        self.show_button.on_click(guarded(self.error, lambda _: self.run()))
        state.needs_model(self.show_button)
        self.header = widgets.HTML()
        self.header.add_class("wb-memory-summary")
        self.table = widgets.GridBox(layout=widgets.Layout(grid_template_columns="90px 90px 80px 80px auto 130px 210px"))
        self.table.add_class("wb-memory-table")
        self.notes = widgets.HTML()
        self.notes.add_class("wb-memory-notes")
        self.carries = widgets.HTML()
        self.carries.add_class("wb-memory-subject")
        # The subject's lens over all layers, read once per fact and weights (one forward pass).
        self.enriched = None
        self.profile = widgets.HTML()
        self.profile.add_class("wb-memory-profile")
        # A key's first profile at a layer reads the corpus (about a minute on Gemma 3 270M
        # on CPU): it runs as a task with progress and Cancel; later keys are instant.
        self.profile_task = Task("Profile", css="wb-memory-profile-run", error=self.error, background=background, state=state)
        self.profile_task.button.layout.display = "none"
        self.profile_task.layout.display = "none"  # shown once a profile runs (no lone Cancel before)
        self.chart = widgets.VBox()
        self.chart.add_class("wb-memory-chart")
        self.effect = widgets.HTML()
        self.effect.add_class("wb-memory-effect")
        self.report = None
        self.changes: dict[int, str] = {}  # key -> "suppress" | "amplify"
        # The last of the table, a re-probe and a key's profile; the neurons' search has its own.
        self.code = CodeView("wb-memory-code")

        # knowledge neurons
        self.kn_error = ErrorLine()
        self.kn_layers = widgets.Text(description="Layers", placeholder="all, or e.g. 8-17")
        self.kn_layers.add_class("wb-neurons-layers")
        self.kn_steps = ClampedIntText(value=20, lo=1, hi=200, description="Steps")
        self.kn_steps.add_class("wb-neurons-steps")
        self.kn_task = Task("Find knowledge neurons", css="wb-neurons-run", error=self.kn_error, background=background, state=state)
        self.kn_task.button.on_click(lambda _: self.run_neurons())
        self.kn_summary = widgets.HTML()
        self.kn_summary.add_class("wb-neurons-summary")
        self.kn_figure = widgets.VBox()
        self.kn_figure.add_class("wb-neurons-chart")
        self.kn_code = CodeView("wb-neurons-code")

        state.on("select", guarded(self.error, self._selected))
        state.on("fact", self._fact_changed)
        state.on("weights", self._weights_changed)
        super().__init__([
            widgets.HTML("<b>FFN memories</b>: the layer's output at a token is a sum of sub-updates "
                         "m<sub>i</sub>·v<sub>i</sub>; the largest are listed with the tokens they promote."),
            widgets.HBox([self.layer, self.position, self.top_k, self.show_button, self.readable_only]),
            self.top_k.note, self.sort, self.code,
            self.error, self.header, self.table, self.notes, self.carries, self.effect, self.profile_task,
            self.profile, self.chart,
            widgets.HTML("<hr><b>Knowledge neurons</b> (Dai et al. 2022): integrated gradients of "
                         "p(true object) over the fact's prompt and paraphrases."),
            widgets.HBox([self.kn_layers, self.kn_steps, self.kn_steps.note]), self.kn_task, self.kn_code,
            self.kn_error, self.kn_summary, self.kn_figure,
        ])
        self.add_class("wb-memories-panel")
        self._fact_changed()

    # -- state ----------------------------------------------------------------------
    def _fact_changed(self) -> None:
        fact = self.state.fact
        self.report = self.enriched = None
        self.changes = {}
        self.table.children = ()
        self.header.value = self.profile.value = self.effect.value = self.notes.value = self.carries.value = ""
        self.chart.children = ()
        self.kn_summary.value = ""
        self.kn_figure.children = ()
        self.code.set("")
        self.kn_code.set("")
        if fact is None:
            self.position.options = []
            return
        model = self.state.model
        tokens = model.str_tokens(model.tokens(fact.text))
        self.position.options = [(f"{i}: {quoted(t)}", i) for i, t in enumerate(tokens)]
        self.position.value = len(tokens) - 1

    def _weights_changed(self) -> None:
        self.enriched = None  # the subject's lens reads the weights as they are now
        if self.report is not None and self.changes:
            guarded(self.error, self.reprobe)()

    def _selected(self) -> None:
        position, layer = self.state.selection
        self.layer.value = layer
        if position in dict((v, v) for _, v in self.position.options):
            self.position.value = position
        self.run()

    # -- the table --------------------------------------------------------------------
    def run(self) -> None:
        fact = self.state.fact
        if fact is None:
            raise WorkbenchError("choose a fact in the Fact tab first")
        layer, n = int(self.layer.value), self.state.model.n_layers
        if not 0 <= layer < n:
            self.table.children = ()
            self.header.value = self.profile.value = self.effect.value = self.notes.value = self.carries.value = ""
            self.chart.children = ()
            self.report = None
            raise WorkbenchError(f"layer {layer} is out of range: {self.state.model.name} has layers 0 to {n - 1}")
        asked = dict(layer=layer, position=int(self.position.value), top_k=int(self.top_k.value),
                     answer=fact.target_true)
        with self.state.using() as model:
            # The push is measured on the fact's true object where it has one, else on the model's top token.
            report = memories(model, fact.text, **asked)
            if self.enriched is None:
                try:
                    self.enriched = enrichment(model, fact)
                except WorkbenchError as exc:  # e.g. the subject's tokens not found in the prompt
                    self.enriched = str(exc)
            calls = [Call(memories, (Code("fact.text"),), asked, result="report")]
            if not isinstance(self.enriched, str):  # the subject's lens, where it could be read
                calls.append(Call(enrichment, (fact,), result="enriched"))
            code = cell(self.state, calls, fact=fact)
        self.show(report)
        self.code.set(code)

    def show(self, report) -> None:
        self.report = report
        self.changes = {}
        self.profile.value = self.effect.value = ""
        clean, by = bool(self.readable_only.value), self.sort.value
        self.header.value = (
            f"Layer <b>{report.layer}</b>, token {report.position} <b>{html.escape(quoted(report.token))}</b>: "
            f"|FFN out|={report.ffn_norm:.2f}; the {len(report.sub_updates)} listed keys carry "
            f"{100 * report.top_weight_share:.1f}% of Σ|m|·|v|. Whole update promotes: "
            f"{html.escape(_tokens(report.ffn_promotes, only_readable=clean))}. Logit lens after the layer: "
            f"{html.escape(_tokens(report.lens_after, 3, only_readable=clean))}"
        )
        answer = quoted(report.answer) if report.answer else "the answer"
        cells = [widgets.HTML(f"<b title='{html.escape(COLUMN_HELP[key], quote=True)}' "
                              f"style='border-bottom:1px dotted #888;cursor:help'>"
                              f"{html.escape(head.format(answer=answer))}</b>" if key else "")
                 for key, head in COLUMNS]
        for u in report.ranked(by):
            cells += self._row(u, clean)
        self.table.children = cells
        self.notes.value = self._notes_html(report, answer, by)
        self.carries.value = self._carries_html(report.layer, clean)
        # The chart shows the table's rows, in its order, with its token filter.
        self.chart.children = (sub_update_figure(report, by=by, only_readable=clean),)

    def _row(self, u, clean: bool) -> list[widgets.Widget]:
        """One table row: the key's profile button, its numbers, tokens and push, its two toggles."""
        key = widgets.Button(description=str(u.key), layout=widgets.Layout(width="85px"),
                             tooltip="show this key's profile")
        key.add_class("wb-memory-key")
        key.on_click(guarded(self.error, lambda _, k=u.key: self.show_profile(k)))
        sup = widgets.ToggleButton(description="suppress", layout=widgets.Layout(width="100px"))
        sup.add_class("wb-memory-suppress")
        amp = widgets.ToggleButton(description=f"amplify ×{AMPLIFY:g}", layout=widgets.Layout(width="100px"))
        amp.add_class("wb-memory-amplify")
        sup.observe(guarded(self.error, lambda ch, k=u.key, other=amp: self._toggle(k, "suppress", ch["new"], other)), "value")
        amp.observe(guarded(self.error, lambda ch, k=u.key, other=sup: self._toggle(k, "amplify", ch["new"], other)), "value")
        push = widgets.Label(f"{u.answer_push:+.3f}")
        push.add_class("wb-memory-push")
        return [key, widgets.Label(f"{u.coefficient:+.3f}"), widgets.Label(f"{u.value_norm:.2f}"),
                widgets.Label(f"{u.weight:.3f}"), widgets.Label(_tokens(u.promotes, only_readable=clean)), push,
                widgets.HBox([sup, amp])]

    def _notes_html(self, report, answer: str, by: str) -> str:
        """What the push column means at this token, how the table is sorted, why odd tokens show."""
        fact = self.state.fact
        source = "the fact's true object" if fact is not None and fact.target_true else "the model's top token"
        answer = html.escape(answer)
        positions = [value for _, value in self.position.options]
        if not positions or report.position == max(positions):
            push = (f"“pushes {answer} by” is each sub-update's direct contribution to the logit of {answer} "
                    f"({source}) at this last token, where the model reads its answer: m<sub>i</sub>·v<sub>i</sub> "
                    "read through the final norm (its scale here held fixed) and the unembedding; what later "
                    f"layers make of it is not counted. The whole FFN update pushes it by {report.ffn_answer_push:+.3f}.")
        else:
            push = (f"This is not the last token, where the model reads its answer: here “pushes {answer} by” "
                    f"is what each sub-update would add to the logit of {answer} ({source}) if it were read out "
                    f"directly at this position. The whole FFN update here would push it by "
                    f"{report.ffn_answer_push:+.3f}.")
        order = ("Sorted by weight." if by == "weight" else
                 f"Sorted by push: the {len(report.sub_updates)} listed keys (the largest by weight) reordered; "
                 "raise Keys to list more.")
        return f"<div style='max-width:900px'>{push} {order}<br>{html.escape(SUBJECT_NOTE)}</div>"

    def _carries_html(self, layer: int, clean: bool) -> str:
        """'What the subject's representation carries here': the subject's lens and attribute rate at ``layer``."""
        r = self.enriched
        head = "<b>What the subject's representation carries here</b>"
        if r is None:
            return ""
        if isinstance(r, str):
            return f"{head}: not read ({html.escape(r)})."
        top = [t for t in r.top[layer] if readable(t)] if clean else list(r.top[layer])
        text = (f"{head}: after layer {layer}, the logit lens of the subject's last token "
                f"{html.escape(quoted(r.tokens[r.position]))} (token {r.position}) reads "
                f"{html.escape(' '.join(quoted(t) for t in top[:8]))}. ")
        if not r.attributes:
            return text + (f"No attribute rate: the workbench knows no attributes of {html.escape(repr(r.subject))} "
                           "(its knowledge table holds places, and the fact names no true object).")
        hits = r.hits[layer]
        shown = html.escape(", ".join(quoted(t) for t in hits[:6])) if hits else "none"
        return text + (f"Attribute rate {r.rate[layer]:.0%}: {len(hits)} of its top {r.top_k} lens tokens are "
                       f"attributes of {html.escape(repr(r.subject))} ({shown}; counted: "
                       f"{html.escape(', '.join(r.attributes[:8]))}).")

    def _toggle(self, key: int, what: str, on: bool, other) -> None:
        if on:
            self.changes[key] = what
            if other.value:
                other.value = False  # fires _toggle(off) for the other; keeps ours
                self.changes[key] = what
        elif self.changes.get(key) == what:
            del self.changes[key]
        self.reprobe()

    def set_change(self, key: int, what: str | None) -> None:
        """Suppress / amplify / reset one listed key (what the toggles do; for scripts and tests)."""
        width = len(COLUMNS)
        for i in range(width, len(self.table.children), width):
            if self.table.children[i].description == str(key):
                sup, amp = self.table.children[i + width - 1].children
                sup.value = what == "suppress"
                amp.value = what == "amplify"
                return
        raise WorkbenchError(f"key {key} is not in the table")

    def reprobe(self) -> None:
        """Probe the fact with the chosen keys changed (only inside the probe)."""
        fact, report = self.state.fact, self.report
        if fact is None or report is None:
            return
        targets = [t for t in (fact.target_true, fact.target_new) if t]
        if not self.changes:
            self.effect.value = ""
            return
        with self.state.using() as model:
            self._reprobe(model, fact, report, targets)

    def _reprobe(self, model, fact, report, targets) -> None:
        base = probe(model, fact.text, targets=targets or None, top_k=3)[0]
        plan = {report.layer: {k: ("scale", 0.0 if w == "suppress" else AMPLIFY) for k, w in self.changes.items()}}
        with intervene(model, plan, position=report.position):
            changed = probe(model, fact.text, targets=targets or None, top_k=3)[0]
        asked = {"targets": targets or None, "top_k": 3}
        self.code.set(cell(self.state, [
            Call(probe, (Code("fact.text"),), asked, result="as_is"),
            Call(probe, (Code("fact.text"),), asked, result="changed",
                 within=Code(f"wb.intervene(model, {literal(plan)}, position={report.position})"))], fact=fact))
        rows = []
        for name, res in (("as is", base), ("keys changed", changed)):
            row = {"": name, "top-1": visible(res.top[0].token), "p(top-1)": res.top[0].prob}
            for t in res.targets:
                row[f"p({t.target})"] = t.prob
            rows.append(row)
        what = ", ".join(f"{w} {k}" for k, w in sorted(self.changes.items()))
        self.effect.value = (f"<b>Re-probed with {html.escape(what)}</b> at layer {report.layer}, "
                             f"token {report.position} (no weights written)"
                             + table(rows, list(rows[0]), css="wb-memory-effect-table",
                                     formats={c: ".4f" for c in rows[0] if c.startswith("p(")}))

    def show_profile(self, key: int) -> None:
        report = self.report
        model, fact = self.state.model, self.state.fact
        prompt = fact.text if fact is not None else None

        def work(token):
            return key_profile(model, report.layer, key, prompt=prompt, cancel=token)

        asked = {"prompt": Code("fact.text") if prompt is not None else None}
        code = cell(self.state, Call(key_profile, (report.layer, key), asked, result="profile"), fact=fact)

        def done(profile):
            self.code.set(code)
            self.profile.value = (f"<b>Key {key}</b> at layer {report.layer} (its value vector, whatever the sign "
                                  "of its coefficient here)" + self._profile_html(profile))

        self.profile.value = f"<i>Profiling key {key} at layer {report.layer}…</i>"
        self.profile_task.layout.display = ""
        self.profile_task.run(work, done, busy="reading the corpus for this layer (once per layer)…")

    @staticmethod
    def _profile_html(profile) -> str:
        parts = []
        for name in ("promotes", "demotes"):
            toks = getattr(profile, name, None)
            if toks:
                parts.append(f"{name}: {html.escape(_tokens(toks, 10))}")
        tokens, acts = getattr(profile, "prompt_tokens", None), getattr(profile, "prompt_activations", None)
        if tokens and acts:
            parts.append("coefficient over the prompt: " + html.escape(
                " ".join(f"{quoted(t)}:{a:+.2f}" for t, a in zip(tokens, acts))))
        contexts = getattr(profile, "contexts", None) or getattr(profile, "top_contexts", None) or []
        rows = []
        for c in list(contexts)[:10]:
            d = c.to_dict() if hasattr(c, "to_dict") else (c if isinstance(c, dict) else {"context": str(c)})
            rows.append({k: v for k, v in d.items() if isinstance(v, (str, int, float))})
        out = "<br>".join(parts)
        if rows:
            out += table(rows, list(rows[0]), css="wb-memory-contexts", formats={"coefficient": ".3f", "activation": ".3f"})
        if not out and hasattr(profile, "to_pandas"):
            out = profile.to_pandas().to_html(max_rows=20)
        return "<br>" + out

    # -- knowledge neurons ------------------------------------------------------------
    def run_neurons(self) -> None:
        fact = self.state.fact
        if fact is None:
            self.kn_error.show("Choose a fact in the Fact tab first.")
            return
        try:
            layers = parse_ints(self.kn_layers.value)
        except WorkbenchError as exc:
            self.kn_error.show(exc)
            return
        model, steps = self.state.model, int(self.kn_steps.value)
        call = Call(knowledge_neurons, (fact,), {"layers": layers, "steps": steps},
                    fact_fields=("paraphrase_prompts",), result="neurons")

        def work(token):
            return knowledge_neurons(model, fact, layers=layers, steps=steps, cancel=token), cell(self.state, call)

        def done(got) -> None:
            self.show_neurons(got[0])
            self.kn_code.set(got[1])

        self.kn_task.run(work, done, busy="attributing…")

    def show_neurons(self, report) -> None:
        n = len(report.neurons)
        effect = report.effect
        text = f"{n} knowledge neuron{'s' if n != 1 else ''} for {html.escape(quoted(report.target_token))}"
        if n:
            text += ": " + ", ".join(f"L{x.layer}·{x.key}" for x in report.neurons[:10])
        if effect is not None:
            text += (f". Mean p(target) {effect.before:.3f}; suppressed {effect.suppressed:.3f}; "
                     f"amplified {effect.amplified:.3f}")
        self.kn_summary.value = text
        fig = neuron_figure(report)
        self.kn_figure.children = (fig,)
