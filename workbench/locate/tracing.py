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
from collections.abc import Sequence

from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.locate.attribution import attribute
from workbench.locate.cells import KINDS, check_settings
from workbench.locate.prepare import LOW_CLEAN_PROB, answer_token, prepare  # noqa: F401 - re-exported
from workbench.locate.sweep import sweep
from workbench.locate.trace_result import TraceResult
from workbench.model import Model
from workbench.progress import CancelToken

PRECISIONS = ("auto", "float32", "bfloat16")
METHODS = ("exact", "attribution")


def resolve_precision(model: Model, precision: str) -> str:
    """``"float32"`` or ``"bfloat16"`` for a trace's restored runs (see :func:`trace`)."""
    if precision not in PRECISIONS:
        raise WorkbenchError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        from workbench.lowp import usable

        return "bfloat16" if usable(model) else "float32"
    return precision


def trace(
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
    cancel: CancelToken | None = None,
    max_tokens: int = 8192,
    precision: str = "auto",
    method: str = "exact",
    answer: str | None = None,
) -> TraceResult:
    """Causal tracing of one fact: which hidden states carry it to the answer.

    Args:
        model: a loaded model.
        fact: a :class:`~workbench.facts.Fact`, a ``(prompt, subject)`` pair (the prompt
            may hold ``{}`` where the subject goes), or a prompt with ``subject=``.
        subject: the words to corrupt, when ``fact`` is a bare prompt.
        kinds: any of ``"resid"``, ``"mlp"``, ``"attn"``, or ``"all"``.
        samples: corrupted copies N (the noise differs per copy).
        noise: noise scale in units of the subject-embedding std.
        noise_std: that std; by default :func:`embedding_std` (fixed subject set).
        window: layers restored around each layer for mlp/attn.
        seed: noise seed.
        cancel: a token the UI can trip to stop early (raises ``Cancelled``).
        max_tokens: sequence-positions per batched forward (memory bound).
        precision: ``"float32"``; ``"bfloat16"`` for the restored runs (scores within
            about 1e-3 of float32); ``"auto"`` (default) picks bfloat16 only where the CPU
            does it natively (:func:`~workbench.lowp.usable`), else float32.
        method: ``"exact"`` (restore and rerun, as above) or ``"attribution"``: a
            first-order estimate of the whole grid from one clean pass and one corrupted
            forward and backward pass (:func:`~workbench.locate.attribution.attribute`),
            an instant preview that the exact trace replaces.
        answer: the word whose first token is scored (e.g. an edit's new object, to see
            where the edited model recalls it); default the model's top-1 next token.

    Returns:
        A :class:`TraceResult`.

    Raises:
        WorkbenchError: subject not in the prompt, prompt longer than the context,
            ``samples`` or ``window`` below 1, unknown kind.

    Example:
        >>> r = trace(model, ("The {} is located in the city of", "Eiffel Tower"), kinds="mlp", samples=5)
        >>> r.scores["mlp"].shape  # (tokens, layers)
        (10, 18)
    """
    if method not in METHODS:
        raise WorkbenchError(f"unknown trace method {method!r}; choose from {', '.join(METHODS)}")
    if method == "attribution":
        return attribute(model, fact, subject=subject, kinds=kinds, samples=samples, noise=noise,
                         noise_std=noise_std, window=window, seed=seed, answer=answer)
    started = time.perf_counter()
    kinds = check_settings(samples, window, noise, kinds)
    precision = resolve_precision(model, precision)
    setup = prepare(model, fact, subject=subject, samples=samples, noise=noise, noise_std=noise_std,
                    seed=seed, answer=answer)
    scores = sweep(setup.runner, setup.corrupted, kinds, window, setup.answer_id, setup.begin, setup.corrupted_prob,
                   cancel=cancel, max_tokens=max_tokens, desc=f"tracing {setup.subject}", precision=precision)
    return setup.result(scores, method="trace", samples=samples, noise=noise, window=window, seed=seed,
                        precision=precision, seconds=time.perf_counter() - started)
