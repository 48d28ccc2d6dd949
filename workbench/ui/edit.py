"""Edit panel: apply an editing method to the current fact; revert; the edit history."""

from __future__ import annotations

import html
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import ipywidgets as widgets
import numpy as np

from workbench.editing import SPECS, active_edits, edit, load_edit, method_names, method_spec, revert_all
from workbench.errors import WorkbenchError
from workbench.snippets import Call, Code
from workbench.ui.code import cell, remember_edit
from workbench.ui.state import State, Task
from workbench.ui.widgets import WIDE, CodeView, ErrorLine, guarded, parse_hparams, parse_ints, quoted, table

#: Corpus tokens the Edit panel ranks for "What did it touch?" (the library's default is 20,000).
TOUCHED_SAMPLES = 5_000

#: Where a user reads whether the trace peak is the layer to edit.
NOTEBOOK_05 = "notebooks/05_does_editing_edit_knowledge.ipynb"


def measured_cost(method: str) -> dict | None:
    """What the committed independent run of ``method`` measured on this kind of CPU:
    seconds per edit, seconds per fact scored (teacher-forced), and where it ran.

    From ``assets/results/<method>_independent.json``; None when there is none.

    Example:
        >>> measured_cost("rome")["per_edit"] > 0                   # doctest: +SKIP
        True
    """
    import json

    from workbench.facts import ASSETS

    path = ASSETS / "results" / f"{method}_independent.json"
    try:
        data = json.loads(path.read_text())
        summary, settings = data["summary"], data.get("settings") or {}
        n = summary["n"]
        wall = settings.get("wall_seconds") or summary.get("seconds_total")
        return {"per_edit": float(summary["seconds_per_edit"]),
                "per_fact": float(wall) / n if wall and n else None,
                "hardware": settings.get("hardware") or "this CPU", "file": path.name}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def methods() -> list[str]:
    """The registered methods in the Edit panel's order."""
    return method_names()


def method_defaults(method: str) -> dict:
    """The method's settings and their defaults (shown as a hint)."""
    return SPECS[method].settings() if method in SPECS else {}


def default_layers_for(model, method: str) -> list[int] | None:
    """The method's default layers on ``model``, or None (it edits no layer)."""
    return SPECS[method].default_layers(model) if method in SPECS else None


def trace_peak(result, kind: str = "mlp") -> tuple[int, str] | None:
    """(layer, kind) of the largest score at the last subject token, read off a trace."""
    if result is None or not result.scores:
        return None
    kind = kind if kind in result.scores else next(iter(result.scores))
    last_subject = result.subject_range[1] - 1
    return int(np.argmax(np.asarray(result.scores[kind])[last_subject])), kind


class EditPanel(widgets.VBox):
    def __init__(self, state: State, *, background: bool = True) -> None:
        self.state = state
        self.error = ErrorLine()
        options = methods()
        self.method = widgets.Dropdown(options=options, value=(options or [None])[0],
                                       description="Method")
        self.method.add_class("wb-edit-method")
        self.layers = widgets.Text(description="Layers", placeholder="method default")
        self.layers.add_class("wb-edit-layers")
        self.layer_note = widgets.HTML()
        self.layer_note.add_class("wb-edit-layer-note")
        self.hparams = widgets.Textarea(description="Hyper-params", rows=3, layout=widgets.Layout(width="70%"),
                                        style=WIDE)
        self.hparams.add_class("wb-edit-hparams")
        self.target = widgets.HTML()
        self.description = widgets.HTML()
        self.description.add_class("wb-edit-description")
        self.card = widgets.HTML()
        self.card.add_class("wb-edit-card")
        self.task = Task("Apply edit", css="wb-edit-apply", error=self.error, background=background, state=state)
        self.task.button.on_click(lambda _: self.apply())
        self.revert_button = widgets.Button(description="Revert last", button_style="warning")
        self.revert_button.add_class("wb-edit-revert")
        self.revert_button.on_click(guarded(self.error, lambda _: self.revert()))
        self.revert_all_button = widgets.Button(description="Revert all", button_style="danger")
        self.revert_all_button.add_class("wb-edit-revert-all")
        self.revert_all_button.on_click(guarded(self.error, lambda _: self.revert_everything()))
        state.needs_model(self.revert_button, self.revert_all_button)
        self.history = widgets.HTML()
        self.history.add_class("wb-edit-history")
        self.touched_task = Task("What did it touch?", css="wb-edit-touched", error=self.error,
                                 background=background, state=state)
        self.touched_task.button.tooltip = ("The corpus texts whose FFN output the last weight edit changes most "
                                            "(‖ΔW k‖), and how much their next-token predictions moved (KL) "
                                            "against random texts")
        self.touched_task.button.on_click(lambda _: self.show_touched())
        self.touched = widgets.HTML()
        self.touched.add_class("wb-edit-touched-table")
        self.code = CodeView("wb-edit-code")
        #: ``(fact, method, layers, hparams) -> saved edit or None``: what Apply may load instead of
        #: computing (the lesson strip sets it; see workbench/ui/lesson.py).
        self.prepared: Callable[..., Path | None] | None = None
        self.method.observe(guarded(self.error, lambda _: self._method_changed()), "value")
        state.on("fact", self._fact_changed)
        state.on("trace", self._update_note)
        state.on("weights", self.refresh_history)
        super().__init__([
            widgets.HTML("<b>Edit</b> the current fact towards its new object. Every edit can be reverted "
                         "exactly (bit for bit)."),
            self.target, widgets.HBox([self.method, self.description]),
            widgets.HBox([self.layers, self.layer_note]), self.hparams,
            self.task, widgets.HBox([self.revert_button, self.revert_all_button]), self.code, self.error, self.card,
            widgets.HTML("<b>History</b>"), self.history,
            self.touched_task, self.touched,
        ])
        self.add_class("wb-edit-panel")
        self._method_changed()
        self._fact_changed()
        self.refresh_history()

    # -- controls -------------------------------------------------------------------
    def _fact_changed(self) -> None:
        fact = self.state.fact
        if fact is None:
            self.target.value = "<i>Choose a fact in the Fact tab first.</i>"
        elif fact.target_new is None:
            self.target.value = (f"<i>{html.escape(fact.text)}</i> → {html.escape(fact.target_true or '?')}: "
                                 "<b>give a new object in the Fact tab to edit</b>")
        else:
            self.target.value = (f"<i>{html.escape(fact.text)}</i>: {html.escape(fact.target_true or '?')} → "
                                 f"<b>{html.escape(fact.target_new)}</b>")
        self._update_note()

    def _method_changed(self) -> None:
        method = self.method.value
        if method is None:
            return
        layers = default_layers_for(self.state.model, method)
        self.layers.value = ", ".join(map(str, layers)) if layers else ""
        self.layers.disabled = not method_spec(method).edits_layers
        defaults = method_defaults(method)
        self.hparams.placeholder = "\n".join(f"{k}={v!r}" for k, v in defaults.items()) or "no hyperparameters"
        self.hparams.value = ""
        cost = measured_cost(method)
        when = (f" Measured: {cost['per_edit']:.1f} s per edit ({cost['hardware']}, assets/results/{cost['file']})."
                if cost and cost["per_edit"] >= 0.05 else "")
        self.description.value = (f"<span style='color:#555'>{html.escape(method_spec(method).description + when)}</span>")
        self._update_note()

    def _update_note(self) -> None:
        method = self.method.value
        spec = SPECS.get(method)
        if spec is not None and spec.kind == "prompt":
            self.layer_note.value = "no weights change: the fact is given to the model as text"
            return
        if spec is not None and spec.kind == "overlay":
            what = spec.holds or "a memory"
            self.layer_note.value = (f"<span style='color:#555'>no weights change: {what} at this layer's FFN "
                                     "answers the prompts it recognises; every other prompt runs as before</span>")
            return
        default = default_layers_for(self.state.model, method) if method else None
        text = (f"method default: {default} (the best layer of a measured ROME sweep over known facts "
                "on this model)" if default else "method default")
        peak = trace_peak(self.state.trace)
        why = ""
        if peak is not None:
            text += f" · trace peak ({peak[1]}, last subject token): layer {peak[0]}"
            if default and peak[0] not in default:
                why = (" — they differ because the default is where edits of many facts worked best, the peak "
                       "where restoring this fact's hidden state helped most; Hase et al. (2023) found the two "
                       "nearly unrelated. ")
        else:
            text += " · run a trace to see its peak layer"
        link = (f"<a href='{NOTEBOOK_05}' target='_blank'>notebook 05, §1</a>" if why else "")
        self.layer_note.value = (f"<span style='color:#555'>{html.escape(text + why)}"
                                 + (f"See {link}." if link else "") + "</span>")

    # -- actions ----------------------------------------------------------------------
    def warm_card(self) -> None:
        """Probe the card's "before" column now, while the model is idle (lesson mode calls it after
        a pick), so that Apply then probes only the edited model. Does nothing when it is busy."""
        fact = self.state.fact
        if fact is None or not fact.target_new or self.state.busy_task is not None:
            return
        try:
            with self.state.using():
                card_before(self.state.model, fact)
        except WorkbenchError:
            pass  # taken meanwhile: Apply computes it

    def apply(self) -> None:
        fact = self.state.fact
        try:
            if fact is None:
                raise WorkbenchError("choose a fact in the Fact tab first")
            if fact.target_new is None:
                raise WorkbenchError("the fact has no new object; type one in the Fact tab")
            method = self.method.value
            if method is None:
                raise WorkbenchError("no editing methods are available in this install")
            layers = None if self.layers.disabled else parse_ints(self.layers.value)
            hparams = parse_hparams(self.hparams.value)
        except WorkbenchError as exc:
            self.error.show(exc)
            return
        model = self.state.model
        spec = method_spec(method)
        takes_cancel = spec.takes_cancel

        def work(token):
            kwargs = dict(hparams)
            if takes_cancel:
                kwargs["cancel"] = token
            if spec.checks_known and "check_known" not in kwargs and not active_edits(model):
                # The Fact tab already says whether the unedited model knows the fact (its rank
                # and p); the method's own check would probe it again inside the click.
                kwargs["check_known"] = False
            asked = {k: v for k, v in kwargs.items() if k != "cancel"}
            call = Call(edit, (fact,), {"method": method, "layers": layers, **asked}, keep=("method",),
                        fact_fields=None, result="handle")
            code = cell(self.state, call)  # before the edit: the edits applied until now come first
            handle, loaded = self._prepared_or_new(model, fact, method, layers, hparams, kwargs)
            remember_edit(self.state, handle, call)
            card = edit_card(model, fact, handle)
            if loaded is not None and card.endswith("</div>"):
                card = card[: -len("</div>")] + (
                    "<br><i class='wb-edit-prepared' style='color:#1b5e20'>Prepared ahead for the lesson: set-up "
                    f"computed this edit and saved it; Apply loaded it ({html.escape(loaded.name)}). Revert, then "
                    "change a setting to compute one.</i></div>")
            return handle, card, code

        self.task.run(work, self._applied, busy=f"editing with {method}…")
        if not takes_cancel:
            self.task.cancel_button.disabled = True
            self.task.cancel_button.tooltip = f"{method} cannot be interrupted; it takes seconds"

    def _prepared_or_new(self, model, fact, method: str, layers, hparams: dict, kwargs: dict):
        """(the edit, the file it was loaded from or None): a saved lesson edit when there is one for
        exactly this ask on the unedited model, else computed now."""
        saved = None
        if self.prepared is not None:
            try:
                saved = self.prepared(fact, method, layers, hparams)
            except Exception:  # noqa: BLE001 - a head start only: compute as usual
                saved = None
        if saved is not None:
            try:
                return load_edit(model, saved), saved
            except WorkbenchError:
                pass  # another machine's or a damaged file: load_edit checked it whole, nothing applied
        return edit(model, fact, method=method, layers=layers, **kwargs), None

    def _applied(self, payload) -> None:
        handle, card, code = payload
        self.code.set(code)
        self.state.history.append(handle)
        self.touched.value = ""
        self.card.value = card
        self.state.emit("weights")

    def show_touched(self, samples: int = TOUCHED_SAMPLES, top_k: int = 8) -> None:
        """Rank the corpus by how much the last weight edit changes its FFN outputs; show KL there."""
        weights = [h for h in active_edits(self.state.model) if h.changes_weights]
        if not weights:
            self.error.show("No weight edit is applied: apply rome, memit, pmet, kn or ft first.")
            return
        handle = weights[-1]
        code = cell(self.state, Code("handle = [h for h in wb.active_edits(model) if h.changes_weights][-1]\n"
                                     f"touched = handle.touched(top_k={top_k!r}, samples={samples!r})"))

        def done(result) -> None:
            self._show_touched(result)
            self.code.set(code)

        self.touched_task.run(lambda token: handle.touched(top_k=top_k, samples=samples, cancel=token),
                              done, busy="ranking corpus texts…")

    def _show_touched(self, result) -> None:
        rows = [{"#": i, "text (token in ⟦ ⟧)": r["snippet"], "‖ΔW k‖": f"{r['change']:.3g}",
                 "÷‖W k‖": f"{r['relative']:.2f}", "KL at token": f"{r['kl_token']:.3g}",
                 "KL over text": f"{r['kl_text']:.3g}"} for i, r in enumerate(result.top, 1)]
        ratio = result.kl_top_mean / result.kl_random_mean if result.kl_random_mean > 0 else float("inf")
        self.touched.value = (
            f"<p>The {len(result.top)} texts (of {result.texts_scanned} scanned, {result.tokens_scanned} tokens) "
            f"whose layer-{', '.join(map(str, result.layers))} FFN output the {html.escape(result.method)} update "
            f"moves most. Mean KL(before ‖ after) of the next token there: <b>{result.kl_top_mean:.3g}</b>, "
            f"against <b>{result.kl_random_mean:.3g}</b> at random tokens of {len(result.random)} random texts "
            f"(×{ratio:.3g}).</p>"
            + table(rows, list(rows[0]) if rows else [], css="wb-edit-touched-rows"))

    def revert(self) -> None:
        self.card.value = ""
        edits = active_edits(self.state.model)
        if not edits:
            raise WorkbenchError("there is no edit to revert")
        with self.state.using():
            code = cell(self.state, Code("wb.active_edits(model)[-1].revert()"))
            edits[-1].revert()
            self.code.set(code)
            self.state.emit("weights")

    def revert_everything(self) -> None:
        self.card.value = ""
        with self.state.using():
            code = cell(self.state, Call(revert_all, result="reverted"))
            n = revert_all(self.state.model)
            if not n:
                raise WorkbenchError("there is no edit to revert")
            self.code.set(code)
            self.state.emit("weights")

    def refresh_history(self) -> None:
        handles = list(self.state.history)
        handles += [h for h in active_edits(self.state.model) if h not in handles]
        rows = []
        for i, h in enumerate(handles, 1):
            norms = h.delta_norms()
            facts = "; ".join(f"{f.get('subject')} → {f.get('target_new')}" for f in h.facts)
            rows.append({
                "#": i, "method": h.method, "fact": facts,
                "layers": ", ".join(map(str, h.layers)) or "—",
                "|Δ|": ", ".join(f"{v:.3g}" for v in norms.values()) or "—",
                "seconds": f"{h.seconds:.1f}", "state": "applied" if h.active else "reverted",
            })
        styles = ["" if r["state"] == "applied" else "color:#999" for r in rows]
        self.history.value = (table(rows, ["#", "method", "fact", "layers", "|Δ|", "seconds", "state"],
                                    css="wb-edit-history-table", row_styles=styles)
                              if rows else "<i>No edits yet.</i>")


def card_rows(fact) -> list[dict]:
    """The card's prompts: the edit prompt, and the first paraphrase, neighbour and implication."""
    pair = [fact.target_true, fact.target_new]
    rows = [{"kind": "edit prompt", "prompt": fact.text, "targets": pair, "want": fact.target_new}]
    if fact.paraphrase_prompts:
        rows.append({"kind": "paraphrase", "prompt": fact.paraphrase_prompts[0], "targets": pair,
                     "want": fact.target_new})
    if fact.neighborhood_prompts:
        rows.append({"kind": "neighbour", "prompt": fact.neighborhood_prompts[0], "targets": pair,
                     "want": fact.target_true})
    if fact.implication_prompts:
        i = fact.implication_prompts[0]
        rows.append({"kind": "implication", "prompt": i.prompt, "targets": [i.target], "want": i.target})
    return rows


#: The card's "before" column per (model, prompts, targets): the unedited model answers them
#: the same every time, and computing it was half of Apply's wait for a saved lesson edit.
_CARD_BEFORE: OrderedDict = OrderedDict()
_CARD_BEFORE_SIZE = 32


def card_before(model, fact):
    """The card's rows probed on the unedited model (:func:`~workbench.editing.unedited`), kept.

    Example:
        >>> card_before(model, fact)[0].top[0].token     # doctest: +SKIP
        ' Paris'
    """
    from workbench.editing import unedited
    from workbench.probing import probe

    rows = card_rows(fact)
    prompts, targets = [r["prompt"] for r in rows], [r["targets"] for r in rows]
    key = (model.name, model.fingerprint, tuple(prompts), tuple(tuple(t) for t in targets))
    if key in _CARD_BEFORE:
        _CARD_BEFORE.move_to_end(key)
        return _CARD_BEFORE[key]
    with unedited(model):
        then = probe(model, prompts, targets=targets, top_k=1)
    _CARD_BEFORE[key] = then
    while len(_CARD_BEFORE) > _CARD_BEFORE_SIZE:
        _CARD_BEFORE.popitem(last=False)
    return then


def edit_card(model, fact, handle) -> str:
    """HTML: what the edit did, read right after Apply — before → after on four kinds of prompt.

    "Before" is the unedited model (:func:`~workbench.editing.unedited`); a row is green when
    its top-1 now starts the object it should (the new one; the true one for a neighbour).
    """
    from workbench.probing import probe

    rows = card_rows(fact)
    prompts, targets = [r["prompt"] for r in rows], [r["targets"] for r in rows]
    now = probe(model, prompts, targets=targets, top_k=1)
    then = card_before(model, fact)
    out, styles = [], []
    for row, b, a in zip(rows, then, now):
        want = row["want"]
        top_b, top_a = b.top[0].token, a.top[0].token
        ok = bool(top_a.strip()) and want.strip().lower().startswith(top_a.strip().lower())
        out.append({"kind": row["kind"], "prompt": row["prompt"], "should say": want,
                    "top-1 before → after": f"{quoted(top_b)} → {quoted(top_a)}",
                    "p(should say) before → after": f"{b.target(want).prob:.3f} → {a.target(want).prob:.3f}",
                    "": "✓" if ok else "✗"})
        styles.append("background:#e3f4e1" if ok else "background:#fbe3e3")
    missing = [k for k in ("paraphrase", "neighbour", "implication") if k not in {r["kind"] for r in rows}]
    text = (f"<b>Applied {html.escape(handle.method)}</b>"
            + (f" at layer {', '.join(map(str, handle.layers))}" if handle.layers else "")
            + f" in {handle.seconds:.1f} s. {html.escape(SPECS[handle.method].description if handle.method in SPECS else '')}")
    prefix = _prefix(model, fact)
    if prefix:
        text += (f"<br>What the model now reads before each prompt: "
                 f"<code class='wb-edit-prefix'>{html.escape(prefix)}</code>")
    table_html = table(out, list(out[0]), css="wb-edit-card-rows", row_styles=styles)
    note = (f"<span style='color:#555'>No {', '.join(missing)} prompt for this fact: add one in the Fact tab.</span>"
            if missing else "<span style='color:#555'>All the probes are in the Probes tab.</span>")
    return f"<div style='border:1px solid #ccc;padding:6px;margin:4px 0'>{text}{table_html}{note}</div>"


def _prefix(model, fact) -> str:
    """The text a no-weight edit puts before the fact's prompt now ("" for weight edits)."""
    read = model.contextualize(fact.text)
    return read.removesuffix(fact.text)
