"""Causal tracing (Meng et al. 2022): where does the model recall a fact?

Run the prompt once clean and ``samples`` times with Gaussian noise on the
subject's token embeddings; then, for every (token, layer), put back the clean
state there and see how much of the clean answer's probability comes back.

* ``"resid"``: restore the block output (residual stream) at (token, layer).
* ``"mlp"`` / ``"attn"``: restore what the FFN / attention adds to the residual
  at that token, for a window of ``window`` layers centred on the layer (clipped
  to the model, as ROME does: layers ``[l - window//2, l + ceil(window/2))``).

The score of a cell is the mean over the corrupted copies of p(clean answer's
first token); its *indirect effect* is score minus the corrupted probability.

How it is made fast (the straightforward way runs one full forward pass of
``1 + samples`` sequences, with logits at every position, per kind, token and
layer; :func:`trace_reference` does exactly that and the tests compare):

1. Restoring at (t, l) cannot change layers below ``l`` (below the window's
   first layer for mlp/attn), so each restored run starts from the corrupted
   run's residual stream entering that layer and only runs the blocks above it
   (:class:`BlockRunner` calls the bridge's blocks with the keyword arguments
   the model itself passed them — masks, rotary tables — captured once).
2. Tokens before the subject see no noise (attention is causal), so restoring
   there is a no-op: those cells equal the corrupted probability, no run needed.
3. Many (token, layer) cells share one batched forward.
4. Only the last position is unembedded (vocabularies run to 262k entries).

Example:
    >>> import workbench as wb
    >>> model = wb.load_model()
    >>> r = wb.trace(model, wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris"))
    >>> r.answer, round(r.clean_prob, 2)
    (' Paris', 0.76)
    >>> r.to_pandas().sort_values("score").tail(1)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any

from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.locate.attribution import attribute
from workbench.locate.setup import LOW_CLEAN_PROB, answer_token, trace_setup  # noqa: F401 - re-exported
from workbench.locate.sweep import sweep
from workbench.locate.trace_cache import cached_trace, store_trace
from workbench.locate.trace_result import TraceResult
from workbench.locate.trace_settings import PRECISIONS, TraceSettings, resolve_precision  # noqa: F401 - re-exported
from workbench.core.model import Model
from workbench.runtime.progress import CancelToken

#: How a trace's grid is computed (not to be confused with the editor's ``METHODS``).
TRACE_ALGORITHMS = ("exact", "attribution")


def trace(
    model: Model,
    fact: Fact | tuple[str, str] | str,
    *,
    subject: str | None = None,
    settings: TraceSettings | None = None,
    method: str = "exact",
    cancel: CancelToken | None = None,
    max_tokens: int = 8192,
    cache: bool = False,
    **overrides: Any,
) -> TraceResult:
    """Causal tracing of one fact: which hidden states carry it to the answer.

    Args:
        model: a loaded model.
        fact: a :class:`~workbench.facts.Fact`, a ``(prompt, subject)`` pair (the prompt
            may hold ``{}`` where the subject goes), or a prompt with ``subject=``.
        subject: the words to corrupt, when ``fact`` is a bare prompt.
        settings: a :class:`~workbench.locate.trace_settings.TraceSettings`: ``kinds``,
            ``samples``, ``noise``, ``noise_std``, ``window``, ``seed``, ``answer``,
            ``precision``; default its defaults.
        **overrides: any of those fields as keywords (``kinds="mlp", samples=3``), over ``settings``.
            ``precision="auto"`` takes bfloat16 for the restored runs only where the CPU does it
            natively and its measured error is within 1e-3 of float32
            (:func:`~workbench.locate.trace_settings.resolve_precision`).
            ``answer``: the word whose first token is scored (e.g. an edit's new object).
        method: ``"exact"`` (restore and rerun, as above) or ``"attribution"``: a
            first-order estimate of the whole grid from one clean pass and one corrupted
            forward and backward pass (:func:`~workbench.locate.attribution.attribute`),
            an instant preview that the exact trace replaces.
        cancel: a token the UI can trip to stop early (raises ``Cancelled``).
        max_tokens: sequence-positions per batched forward (memory bound).
        cache: read an exact trace of the same weights and settings from the trace cache
            (:mod:`~workbench.locate.trace_cache`) and keep a computed one there; never
            while an edit is applied (:meth:`~workbench.core.model.Model.is_unedited`).

    Returns:
        A :class:`TraceResult`.

    Raises:
        WorkbenchError: subject not in the prompt, prompt longer than the context,
            ``samples`` or ``window`` below 1, unknown kind.

    Example:
        >>> r = trace(model, ("The {} is located in the city of", "Eiffel Tower"), kinds="mlp", samples=5)
        >>> r.scores["mlp"].shape  # (tokens, layers)
        (10, 18)
        >>> trace(model, fact, settings=TraceSettings(kinds="mlp", samples=3), cache=True)  # doctest: +SKIP
    """
    if method not in TRACE_ALGORITHMS:
        raise WorkbenchError(f"unknown trace method {method!r}; choose from {', '.join(TRACE_ALGORITHMS)}")
    settings = TraceSettings.of(settings, **overrides)
    if method == "attribution":
        return attribute(model, fact, subject=subject, settings=settings)  # a preview: never cached
    if cache:
        found = cached_trace(model, fact, settings, subject=subject)
        if found is not None:
            return found
    started = time.perf_counter()
    precision = resolve_precision(model, settings.precision)
    setup = trace_setup(model, fact, settings, subject=subject)
    scores = sweep(setup.runner, setup.corrupted, settings.kinds, settings.window, setup.answer_id, setup.begin,
                   setup.corrupted_prob, cancel=cancel, max_tokens=max_tokens, desc=f"tracing {setup.subject}",
                   precision=precision)
    result = setup.result(scores, settings, method="trace", precision=precision,
                          seconds=time.perf_counter() - started)
    if cache:
        store_trace(model, fact, result, settings, subject=subject)  # the next trace of these settings answers at once
    return result
