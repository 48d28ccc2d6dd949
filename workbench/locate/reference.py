"""Causal tracing the slow, obvious way: the reference :func:`~workbench.locate.tracing.trace` is checked against."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from workbench.facts import Fact
from workbench.locate.cells import KINDS, check_settings, window_layers
from workbench.locate.noise import embedding_std, make_noise
from workbench.locate.spans import prompt_and_subject, subject_span
from workbench.model import Model
from workbench.progress import CancelToken, progress


def trace_reference(
    model: Model,
    fact: Fact | tuple[str, str] | str,
    *,
    subject: str | None = None,
    kinds: str | Sequence[str] = KINDS,
    samples: int = 10,
    noise: float = 3.0,
    noise_std: float | None = None,
    window: int = 10,
    seed: int = 0,
    cells: Sequence[tuple[int, int]] | None = None,
    cancel: CancelToken | None = None,
    answer: str | None = None,
) -> dict[str, np.ndarray]:
    """Causal tracing the slow, obvious way, for checking :func:`trace`.

    As ROME's reference code: per (kind, token, layer) one forward pass of the clean
    prompt plus ``samples`` corrupted copies through the whole model, noise added at
    the embedding hook, clean states copied from row 0 by hooks, logits at every
    position. Same noise as :func:`trace` for the same seed.

    Args:
        cells: only these ``(token, layer)`` cells (others are NaN); all by default.
        answer: score this word's first token instead of the model's top-1.

    Returns:
        ``{kind: [tokens, layers]}`` scores.
    """
    kinds = check_settings(samples, window, noise, kinds)
    prompt, subject, _ = prompt_and_subject(fact, subject)
    tokens = model.tokens(prompt)
    begin, end = subject_span(model, tokens[0].tolist(), prompt, subject)
    std = embedding_std(model) if noise_std is None else float(noise_std)
    eps = make_noise(samples, end - begin, model.d_model, noise * std, seed).to(model.device)
    if answer is not None:
        from workbench.locate.prepare import answer_token

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
        with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
            logits = model.bridge(batch)
        probs = logits[1:, -1].float().softmax(-1)[:, answer_id]
        out[kind][t, layer] = float(probs.mean())
    return out
