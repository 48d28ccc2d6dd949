"""Causal tracing the slow, obvious way: the reference :func:`~workbench.locate.tracing.trace` is checked against."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from workbench.core.activations import hooked
from workbench.facts import Fact
from workbench.locate.cells import window_layers
from workbench.locate.noise import embedding_std, make_noise
from workbench.locate.spans import prompt_and_subject, subject_span
from workbench.locate.trace_settings import TraceSettings
from workbench.core.model import Model
from workbench.runtime.progress import CancelToken, progress


def trace_reference(
    model: Model,
    fact: Fact | tuple[str, str] | str,
    *,
    subject: str | None = None,
    settings: TraceSettings | None = None,
    cells: Sequence[tuple[int, int]] | None = None,
    cancel: CancelToken | None = None,
    **overrides: Any,
) -> dict[str, np.ndarray]:
    """Causal tracing the slow, obvious way, for checking :func:`trace`.

    As ROME's reference code: per (kind, token, layer) one forward pass of the clean
    prompt plus ``samples`` corrupted copies through the whole model, noise added at
    the embedding hook, clean states copied from row 0 by hooks, logits at every
    position. Same noise as :func:`trace` for the same seed; ``precision`` is not used
    (always the model's dtype).

    Args:
        settings: a :class:`TraceSettings` (or its fields as keywords), as for :func:`trace`.
        cells: only these ``(token, layer)`` cells (others are NaN); all by default.

    Returns:
        ``{kind: [tokens, layers]}`` scores.

    Example:
        >>> ref = trace_reference(model, ("The {} is in", "Eiffel Tower"), kinds="mlp", cells=[(3, 1)])  # doctest: +SKIP
    """
    settings = TraceSettings.of(settings, **overrides)
    kinds, samples, noise, window, answer = (settings.kinds, settings.samples, settings.noise, settings.window,
                                             settings.answer)
    prompt, subject, _ = prompt_and_subject(fact, subject)
    tokens = model.tokens(prompt)
    begin, end = subject_span(model, tokens[0].tolist(), prompt, subject)
    std = embedding_std(model) if settings.noise_std is None else float(settings.noise_std)
    eps = make_noise(samples, end - begin, model.d_model, noise * std, settings.seed).to(model.device)
    if answer is not None:
        from workbench.locate.setup import answer_token

        answer_id = answer_token(model, answer)
    else:
        with torch.no_grad():
            answer_id = int(model.bridge(tokens)[0, -1].argmax())
    batch = tokens.repeat(samples + 1, 1)

    def add_noise(x, hook):
        x = x.clone()
        x[1:, begin:end] += eps.to(x.dtype)
        return x

    def restore(t: int):
        def fn(x, hook):
            x = x.clone()
            x[1:, t] = x[0, t]
            return x
        return fn

    n_pos, n_layers = tokens.shape[1], model.n_layers
    todo = list(cells) if cells is not None else [(t, l) for t in range(n_pos) for l in range(n_layers)]
    out = {k: np.full((n_pos, n_layers), np.nan) for k in kinds}
    roles = model.roles
    for kind, t, layer in progress([(k, t, l) for k in kinds for t, l in todo], desc="reference trace", cancel=cancel):
        if kind == "resid":
            names = [roles.hook("resid", layer)]
        else:
            lo, hi = window_layers(layer, window, n_layers)
            names = [roles.hook(kind, j) for j in range(lo, hi)]
        hooks = [(roles.hook("embed"), add_noise)] + [(n, restore(t)) for n in names]
        with torch.no_grad(), hooked(model, hooks):
            logits = model.bridge(batch)
        probs = logits[1:, -1].float().softmax(-1)[:, answer_id]
        out[kind][t, layer] = float(probs.mean())
    return out
