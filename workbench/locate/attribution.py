"""Attribution patching: the whole causal-trace grid at once, to first order.

Restoring the clean state ``c`` at a cell where the corrupted run has ``x``
changes the score ``P`` (the mean over corrupted copies of p(answer)) by about
``(c - x) · ∂P/∂x`` (Nanda 2023, "Attribution patching"; Kramár et al. 2024,
"AtP*"). One corrupted forward and one backward pass give ``∂P/∂x`` for every
state of every kind at every token and layer, so the estimate of the whole grid
costs about three forward passes where the exact trace reruns the model once
per cell. An mlp/attn cell restores its kind over a window of layers; its
estimate is the sum of the per-layer estimates over that window.

It is an approximation, and on the default model a rough one: p(answer) is
far from linear in a state that restoring moves a long way (from p≈0.005 to
p≈0.7 for the Eiffel Tower), so the first-order estimate misjudges the big
cells. Over 50 known facts (``benchmarks/attribution.py``, 3 samples) its grid
ranks the cells like the exact one only moderately (Spearman 0.63–0.67 by
kind) and it named the exact trace's mlp peak layer at the last subject token
for 6 of 50 facts (within one layer for 17). Read it as a first
sketch of which tokens matter, not as the layer to edit.

Example:
    >>> r = attribute(model, ("The {} is located in the city of", "Eiffel Tower"))   # doctest: +SKIP
    >>> r.method, r.scores["mlp"].shape                                             # doctest: +SKIP
    ('attribution', (10, 18))
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from workbench.core.activations import hooked
from workbench.locate.cells import KINDS, window_layers
from workbench.locate.setup import trace_setup
from workbench.locate.trace_result import TraceResult
from workbench.locate.trace_settings import TraceSettings
from workbench.core.model import Model


def attribute(
    model: Model,
    fact,
    *,
    subject: str | None = None,
    settings: TraceSettings | None = None,
    **overrides: Any,
) -> TraceResult:
    """First-order estimate of :func:`~workbench.locate.tracing.trace`'s grid (``method="attribution"``).

    Same settings (a :class:`TraceSettings`, or its fields as keywords) and the same noise
    as the exact trace; ``scores`` are the corrupted probability plus the estimated effect
    of restoring each cell. ``precision`` is not used: the estimate is float32.

    Example:
        >>> attribute(model, ("The {} is in", "Eiffel Tower"), kinds="mlp", samples=2).method  # doctest: +SKIP
        'attribution'
    """
    started = time.perf_counter()
    settings = TraceSettings.of(settings, **overrides)
    kinds, window = settings.kinds, settings.window
    setup = trace_setup(model, fact, settings, subject=subject)
    per_layer = layer_attributions(model, setup.runner, setup.x0, setup.answer_id)
    n_pos, n_layers = len(setup.ids), model.n_layers
    scores = {}
    for kind in kinds:
        grid = per_layer[kind]
        if kind != "resid":  # the window's layers restored together: their estimates add
            grid = np.stack([grid[:, slice(*window_layers(layer, window, n_layers))].sum(1)
                             for layer in range(n_layers)], axis=1)
        scores[kind] = setup.corrupted_prob + grid
        # Restoring before the subject changes nothing; say so exactly, not to rounding.
        scores[kind][: setup.begin] = setup.corrupted_prob
        assert scores[kind].shape == (n_pos, n_layers)
    return setup.result(scores, settings, method="attribution", precision="float32",
                        seconds=time.perf_counter() - started)


def layer_attributions(model: Model, runner, x0: torch.Tensor, answer_id: int) -> dict[str, np.ndarray]:
    """``{kind: [pos, layers]}``: ``(clean - corrupted) · ∂P/∂corrupted`` summed over the
    corrupted copies, for one layer at a time (resid: the block's output)."""
    n = model.n_layers
    kept: dict[tuple[str, int], torch.Tensor] = {}

    def keep(kind: str, layer: int):
        def fn(x, hook):
            kept[(kind, layer)] = x
            return x
        return fn

    hooks = [(model.roles.hook(kind, layer), keep(kind, layer)) for kind in KINDS for layer in range(n)]
    x = x0.detach().clone()
    with torch.enable_grad():
        h = x.requires_grad_(True)
        with hooked(model, hooks):
            for layer in range(n):
                out = model.bridge.blocks[layer](h, *runner.block_args[layer], **runner.block_kwargs[layer])
                h = out[0] if isinstance(out, tuple) else out
        hidden = model.bridge.ln_final(h[:, -1])
        logp = model.logits_from_hidden(hidden).float().log_softmax(-1)[:, answer_id]
        score = logp.exp().mean()
        names = list(kept)
        # Gradients for these states only: no weight gradients computed, none stored on the model.
        grads = dict(zip(names, torch.autograd.grad(score, [kept[k] for k in names], allow_unused=True)))
    clean = {"resid": runner.resid[1:], "mlp": runner.acts["mlp"], "attn": runner.acts["attn"]}
    out = {}
    for kind in KINDS:
        cols = []
        for layer in range(n):
            act = kept[(kind, layer)]
            grad = grads[(kind, layer)]
            if grad is None:  # the state does not reach the answer (cannot happen in a causal model)
                grad = torch.zeros_like(act)
            # Σ over copies of (clean - corrupted_s) · ∂P/∂x_s, per position.
            cols.append(((clean[kind][layer] - act.detach()) * grad).sum(-1).sum(0))
        out[kind] = torch.stack(cols, dim=1).detach().double().cpu().numpy()
    return out
