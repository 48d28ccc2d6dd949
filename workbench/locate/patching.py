"""Activation patching: restore one prompt's states into a run on another.

Where causal tracing corrupts the subject with noise, patching swaps it for a
real alternative: run the *corrupt* prompt (say, another subject of the same
length in tokens) and, at each (token, layer), put back the *clean* prompt's
state. The score is p(clean answer); the same batched machinery as
:mod:`workbench.locate.tracing` makes it cheap (cells before the first differing token
cannot change and get the corrupt probability without a run).

Example:
    >>> r = patch(model, "The Eiffel Tower is located in the city of",
    ...           "The Colosseum is located in the city of", kinds="mlp")  # doctest: +SKIP
    >>> r.answer, r.corrupted_prob < r.clean_prob  # doctest: +SKIP
    (' Paris', True)
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from workbench.core.activations import hooked
from workbench.errors import WorkbenchError
from workbench.locate.blocks import BlockRunner, answer_probs
from workbench.locate.cells import KINDS, check_kinds, check_window, window_layers
from workbench.locate.sweep import sweep
from workbench.locate.trace_result import TraceResult
from workbench.core.model import Model
from workbench.runtime.progress import CancelToken, progress


def _pair(model: Model, clean_prompt: str, corrupt_prompt: str):
    for name, p in (("clean", clean_prompt), ("corrupt", corrupt_prompt)):
        if not isinstance(p, str) or not p.strip():
            raise WorkbenchError(f"the {name} prompt is empty")
    clean, corrupt = model.tokens(clean_prompt), model.tokens(corrupt_prompt)
    if clean.shape[1] != corrupt.shape[1]:
        raise WorkbenchError(
            f"patching needs prompts of the same length in tokens: the clean prompt has {clean.shape[1]} "
            f"({model.str_tokens(clean)}), the corrupt one {corrupt.shape[1]} ({model.str_tokens(corrupt)})"
        )
    differ = (clean[0] != corrupt[0]).nonzero().flatten().tolist()
    if not differ:
        raise WorkbenchError("the clean and corrupt prompts are the same tokens: nothing to patch")
    return clean, corrupt, differ


def patch(
    model: Model,
    clean_prompt: str,
    corrupt_prompt: str,
    *,
    kinds: str | Sequence[str] = KINDS,
    window: int = 10,
    cancel: CancelToken | None = None,
    max_tokens: int = 8192,
) -> TraceResult:
    """Activation patching from ``clean_prompt`` into ``corrupt_prompt``.

    Args:
        model: a loaded model.
        clean_prompt: the prompt whose answer (its top-1 token) is scored.
        corrupt_prompt: a prompt of the same token length (e.g. another subject).
        kinds: any of ``"resid"``, ``"mlp"``, ``"attn"``, or ``"all"``.
        window: layers restored around each layer for mlp/attn.
        cancel: stop early (raises ``Cancelled``).

    Returns:
        A :class:`~workbench.locate.trace_result.TraceResult` with ``method="patch"``;
        ``corrupted_prob`` is p(clean answer) on the corrupt prompt and
        ``subject_range`` spans the tokens that differ.

    Raises:
        WorkbenchError: prompts of different token lengths, identical prompts,
            ``window`` below 1, unknown kind.
    """
    started = time.perf_counter()
    kinds = check_kinds(kinds)
    check_window(window)
    clean, corrupt, differ = _pair(model, clean_prompt, corrupt_prompt)
    runner = BlockRunner(model, clean)
    corrupt_runner = BlockRunner(model, corrupt)
    with torch.no_grad():
        clean_logp = model.logits_from_hidden(model.bridge.ln_final(runner.resid[-1][:, -1])).float().log_softmax(-1)[0]
    answer_id = int(clean_logp.argmax())
    clean_prob = float(clean_logp[answer_id].exp())
    corrupted_prob = float(answer_probs(model, model.bridge.ln_final(corrupt_runner.resid[-1][:, -1]), answer_id)[0])
    scores = sweep(runner, corrupt_runner.clean, kinds, window, answer_id, differ[0], corrupted_prob,
                   cancel=cancel, max_tokens=max_tokens, desc="patching")
    answer = model.tokenizer.decode([answer_id])
    warnings = []
    if clean_prob < 0.1:
        warnings.append(f"the clean answer {answer!r} has p={clean_prob:.3f} < 0.1: scores are mostly noise")
    if corrupted_prob > 0.5 * clean_prob:
        warnings.append(f"the corrupt prompt keeps p={corrupted_prob:.3f} of clean {clean_prob:.3f}: little to restore")
    return TraceResult(
        model=model.name, prompt=clean_prompt, subject=corrupt_prompt, tokens=model.str_tokens(clean),
        subject_range=[differ[0], differ[-1] + 1], answer=answer, answer_id=answer_id,
        clean_prob=clean_prob, corrupted_prob=corrupted_prob, scores=scores, method="patch",
        samples=1, window=window, seconds=time.perf_counter() - started, warnings=warnings,
    )


def patch_reference(
    model: Model, clean_prompt: str, corrupt_prompt: str, *, kinds: str | Sequence[str] = KINDS, window: int = 10
) -> dict[str, np.ndarray]:
    """Patching the straightforward way (one full forward of [clean, corrupt] per cell),
    for checking :func:`patch`."""
    kinds = check_kinds(kinds)
    clean, corrupt, _ = _pair(model, clean_prompt, corrupt_prompt)
    batch = torch.cat([clean, corrupt])
    with torch.no_grad():
        answer_id = int(model.bridge(clean)[0, -1].argmax())

    def restore(t: int):
        def fn(x, hook):
            x = x.clone()
            x[1, t] = x[0, t]
            return x
        return fn

    n_pos, n_layers, roles = clean.shape[1], model.n_layers, model.roles
    out = {k: np.zeros((n_pos, n_layers)) for k in kinds}
    for kind, t, layer in progress([(k, t, l) for k in kinds for t in range(n_pos) for l in range(n_layers)],
                                   desc="reference patching"):
        if kind == "resid":
            names = [roles.hook("resid", layer)]
        else:
            lo, hi = window_layers(layer, window, n_layers)
            names = [roles.hook(kind, j) for j in range(lo, hi)]
        with torch.no_grad(), hooked(model, [(n, restore(t)) for n in names]):
            logits = model.bridge(batch)
        out[kind][t, layer] = float(logits[1, -1].float().softmax(-1)[answer_id])
    return out
