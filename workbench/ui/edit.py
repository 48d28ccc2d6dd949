"""Edit panel: apply an editing method to the current fact; revert; the edit history."""

from __future__ import annotations

import html
import inspect

import ipywidgets as widgets
import numpy as np

from workbench.editing import METHODS, active_edits, edit, revert_all
from workbench.editing.search import METHOD_DEFAULTS, SearchParams
from workbench.errors import WorkbenchError
from workbench.ui.common import ErrorLine, State, Task, guarded, parse_hparams, parse_ints, table

#: Corpus tokens the Edit panel ranks for "What did it touch?" (the library's default is 20,000).
TOUCHED_SAMPLES = 5_000

#: Order of the dropdown; methods this install lacks are left out.
ORDER = ("rome", "memit", "pmet", "emmet", "alphaedit", "kn", "ft", "grace", "wise", "in-context", "retrieval")


def methods() -> list[str]:
    known = [m for m in ORDER if m in METHODS]
    return known + sorted(m for m in METHODS if m not in known)


def method_defaults(method: str) -> dict:
    """The method's keyword hyperparameters and their defaults (shown as a hint)."""
    fn = METHODS.get(method)
    if fn is None:
        return {}
    skip = {"model", "facts", "layers", "cancel"}
    own = {name: p.default for name, p in inspect.signature(fn).parameters.items()
           if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in skip
           and p.default is not inspect.Parameter.empty}
    # The target-search settings come in through **search; their defaults live in one place.
    search = SearchParams.for_method(method).to_dict() if method in METHOD_DEFAULTS else {}
    return {**own, **search}


def default_layers_for(model, method: str) -> list[int] | None:
    """The method's default layers from ``workbench.editing.defaults``, or None (no layers)."""
    try:
        from workbench.editing.defaults import default_layers
    except ImportError:
        return None
    try:
        return list(default_layers(model, method))
    except WorkbenchError:
        return None


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
        self.method = widgets.Dropdown(options=options, value="rome" if "rome" in options else (options or [None])[0],
                                       description="Method")
        self.method.add_class("wb-edit-method")
        self.layers = widgets.Text(description="Layers", placeholder="method default")
        self.layers.add_class("wb-edit-layers")
        self.layer_note = widgets.HTML()
        self.layer_note.add_class("wb-edit-layer-note")
        self.hparams = widgets.Textarea(description="Hyper-params", rows=3, layout=widgets.Layout(width="70%"))
        self.hparams.add_class("wb-edit-hparams")
        self.target = widgets.HTML()
        self.task = Task("Apply edit", css="wb-edit-apply", error=self.error, background=background, state=state)
        self.task.button.on_click(lambda _: self.apply())
        self.revert_button = widgets.Button(description="Revert last", button_style="warning")
        self.revert_button.add_class("wb-edit-revert")
        self.revert_button.on_click(guarded(self.error, lambda _: self.revert()))
        self.revert_all_button = widgets.Button(description="Revert all", button_style="danger")
        self.revert_all_button.add_class("wb-edit-revert-all")
        self.revert_all_button.on_click(guarded(self.error, lambda _: self.revert_everything()))
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
        self.method.observe(guarded(self.error, lambda _: self._method_changed()), "value")
        state.on("fact", self._fact_changed)
        state.on("trace", self._update_note)
        state.on("weights", self.refresh_history)
        super().__init__([
            widgets.HTML("<b>Edit</b> the current fact towards its new object. Every edit can be reverted "
                         "exactly (bit for bit)."),
            self.target, self.method, widgets.HBox([self.layers, self.layer_note]), self.hparams,
            self.task, widgets.HBox([self.revert_button, self.revert_all_button]), self.error,
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
        self.layers.disabled = method in ("in-context", "retrieval")
        defaults = method_defaults(method)
        self.hparams.placeholder = "\n".join(f"{k}={v!r}" for k, v in defaults.items()) or "no hyperparameters"
        self.hparams.value = ""
        self._update_note()

    def _update_note(self) -> None:
        method = self.method.value
        if method in ("in-context", "retrieval"):
            self.layer_note.value = "no weights change: the fact is given to the model as text"
            return
        if method in ("grace", "wise"):
            what = "a codebook" if method == "grace" else "a side memory with a router"
            self.layer_note.value = (f"<span style='color:#555'>no weights change: {what} at this layer's FFN "
                                     "answers the prompts it recognises; every other prompt runs as before</span>")
            return
        default = default_layers_for(self.state.model, method) if method else None
        text = f"method default: {default}" if default else "method default"
        peak = trace_peak(self.state.trace)
        if peak is not None:
            text += (f" · trace peak ({peak[1]}, last subject token): layer {peak[0]} — "
                     "the best layer to edit often differs from where tracing peaks (Hase et al. 2023)")
        else:
            text += " · run a trace to see its peak layer"
        self.layer_note.value = f"<span style='color:#555'>{html.escape(text)}</span>"

    # -- actions ----------------------------------------------------------------------
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
        takes_cancel = "cancel" in inspect.signature(METHODS[method]).parameters

        def work(token):
            kwargs = dict(hparams)
            if takes_cancel:
                kwargs["cancel"] = token
            return edit(model, fact, method=method, layers=layers, **kwargs)

        self.task.run(work, self._applied, busy=f"editing with {method}…")
        if not takes_cancel:
            self.task.cancel_button.disabled = True
            self.task.cancel_button.tooltip = f"{method} cannot be interrupted; it takes seconds"

    def _applied(self, handle) -> None:
        self.state.history.append(handle)
        self.touched.value = ""
        self.state.emit("weights")

    def show_touched(self, samples: int = TOUCHED_SAMPLES, top_k: int = 8) -> None:
        """Rank the corpus by how much the last weight edit changes its FFN outputs; show KL there."""
        weights = [h for h in active_edits(self.state.model) if h.changes_weights]
        if not weights:
            self.error.show("No weight edit is applied: apply rome, memit, pmet, kn or ft first.")
            return
        handle = weights[-1]
        self.touched_task.run(lambda token: handle.touched(top_k=top_k, samples=samples, cancel=token),
                              self._show_touched, busy="ranking corpus texts…")

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
        edits = active_edits(self.state.model)
        if not edits:
            raise WorkbenchError("there is no edit to revert")
        with self.state.using():
            edits[-1].revert()
            self.state.emit("weights")

    def revert_everything(self) -> None:
        with self.state.using():
            n = revert_all(self.state.model)
            if not n:
                raise WorkbenchError("there is no edit to revert")
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
