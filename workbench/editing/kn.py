"""Knowledge-neuron editing (Dai et al. 2022).

Locate the FFN keys ("knowledge neurons") whose integrated-gradient attribution
for the true object is high on the edit prompt and its paraphrases (via
:func:`workbench.locate.neurons.knowledge_neurons`), then move each neuron's value
vector v_i away from the old object's output embedding and towards the new
one's: v_i ← v_i + s · ‖v_i‖ · (ê_new − ê_old), ê = unit output-embedding
direction of the object's first token. For a family with a post-FFN norm (Gemma)
the direction is divided by the norm's gain first, so that after the norm it
points along the embedding. Expect a weak edit: the paper reports low success
for changing (rather than erasing) facts; the workbench shows it as it is.

Example:
    >>> h = wb.edit(model, fact, method="kn")                    # doctest: +SKIP
    >>> h.info["neurons"][:2]                                     # doctest: +SKIP
    [[15, 1021], [16, 88]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from workbench.editing.handle import EditHandle, commit_weights
from workbench.editing.optimize import param_name, warn_if_unknown
from workbench.checks import Number, Whole
from workbench.editing.defaults import upper_half_layers
from workbench.editing.registry import register_method
from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.locate.neurons import knowledge_neurons
from workbench.core.model import Model
from workbench.probing import target_ids


def _direction(model: Model, layer: int, token: int) -> Tensor:
    emb = model.hf_model.get_output_embeddings().weight[token].detach().double()
    gain = model.roles.value_direction_gain(model.bridge, layer)
    if gain is not None:
        emb = emb / gain.detach().double()
    return emb / emb.norm()


@register_method(
    "kn", order=5, layers=upper_half_layers, checks_known=True,
    summary="Knowledge neurons (Dai et al. 2022): FFN neurons found by integrated gradients, values rewritten",
    description="Knowledge neurons (Dai et al. 2022): find FFN neurons by integrated gradients and rewrite their "
                "value vectors.", limits={
    "strength": Number(0, strict=True), "threshold": Number(0, 1, strict=True), "share": Number(0, 1, strict=True),
    "max_neurons": Whole(1, 10_000), "steps": Whole(1, 1000),
})
def kn(
    model: Model,
    facts: Sequence[Fact],
    *,
    layers: Sequence[int] | None = None,
    strength: float = 4.0,
    threshold: float = 0.2,
    share: float = 0.5,
    max_neurons: int = 20,
    steps: int = 20,
    check_known: bool = True,
) -> EditHandle:
    """Edit facts by moving the value vectors of their knowledge neurons.

    Args:
        layers: layers to search for neurons (default: the upper half of the model).
        strength: s, how far to move each value vector (in units of its own norm).
        threshold, share, steps: passed to ``knowledge_neurons``.
        max_neurons: at most this many neurons per fact (the highest attributions).
    """
    if layers is None:
        layers = upper_half_layers(model)
    layers = [model.layer_index(int(l)) for l in layers]
    if any(f.target_true is None for f in facts):
        raise WorkbenchError("kn needs target_true: it moves value vectors away from the old object")
    if check_known:
        warn_if_unknown(model, facts)
    info: dict = {"neurons": [], "search_layers": layers}

    def compute() -> dict[str, Tensor]:
        changes: dict[int, Tensor] = {}
        for fact in facts:
            prompts = [fact.text, *fact.paraphrase_prompts]
            report = knowledge_neurons(
                model, prompts, fact.target_true, layers=layers, steps=steps, threshold=threshold,
                share=share, measure=False,
            )
            found = sorted(report.neurons or report.top, key=lambda n: -n.attribution)[:max_neurons]
            if not found:
                raise WorkbenchError(f"no knowledge neurons found for {fact.text!r} -> {fact.target_true!r}")
            old = target_ids(model, fact.text, fact.target_true)[0]
            new = target_ids(model, fact.text, fact.target_new)[0]
            for n in found:
                values = model.roles.value_vectors(model.bridge, n.layer)  # row i = v_i
                v = values[n.key].detach().double()
                step = strength * v.norm() * (_direction(model, n.layer, new) - _direction(model, n.layer, old))
                d = changes.setdefault(n.layer, torch.zeros_like(values, dtype=torch.float64))
                d[n.key] += step.to(d.device)
                info["neurons"].append([n.layer, n.key])
        out = {}
        for layer, d in changes.items():
            param = model.roles.value_weight(model.bridge, layer)
            stored = d if model.roles.value_weight_rows_are_values else d.T
            out[param_name(model, param)] = (param.detach().double() + stored).to(param.dtype)
        info["layers"] = sorted(changes)
        return out

    handle_layers = layers
    h = commit_weights(model, "kn", handle_layers, [f.to_dict() for f in facts], compute, info=info)
    h.layers = list(info.get("layers", handle_layers))
    return h
