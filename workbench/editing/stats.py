"""Second moments of the FFN keys, C = E[k kᵀ], from natural text.

ROME, MEMIT and PMET spread an edit over the directions the FFN keys rarely
take in ordinary text: they need ``C`` per layer. Computing it costs forward
passes over a corpus, so each (model, layer, corpus, token count) is cached on
disk under ``cache_dir("stats")`` and one pass fills every requested layer.

Example:
    >>> C = second_moments(model, [3], samples=20_000)   # doctest: +SKIP
    >>> C[3].shape
    torch.Size([2048, 2048])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.core.activations import capture
from workbench.runtime.cache import cache_dir, load_checked, save_checked
from workbench.errors import WorkbenchError
from workbench.core.model import Model
from workbench.runtime.progress import CancelToken, progress

#: Default number of corpus tokens behind C: ten times d_mlp of Gemma 3 270M,
#: a few CPU minutes; see benchmarks/stats.py for how scores move with it.
DEFAULT_SAMPLES = 20_000


def _path(model: Model, layer: int, corpus: str, samples: int, include_bos: bool = False):
    # BOS-including moments are other numbers: their own key, so neither is read for the other.
    bos = "_bos" if include_bos else ""
    return cache_dir("stats") / f"{model.fingerprint}_{corpus}{bos}_{samples}tok_L{layer}.pt"


def is_cached(model: Model, layer: int, *, samples: int = DEFAULT_SAMPLES, corpus: str = "stats",
              include_bos: bool = False) -> bool:
    """Whether C of ``layer`` is on disk and reads back whole (no corpus pass needed for it)."""
    return _load(_path(model, model.layer_index(int(layer)), corpus, samples, include_bos), model.d_mlp) is not None


def _load(path, d_mlp: int) -> Tensor | None:
    """A cached C, if it is a finite float32 ``[d_mlp, d_mlp]`` matrix (else it is recomputed)."""

    def check(C) -> str | None:
        if not isinstance(C, Tensor) or C.dtype != torch.float32 or tuple(C.shape) != (d_mlp, d_mlp):
            return f"expected a float32 tensor of shape ({d_mlp}, {d_mlp})"
        return None if torch.isfinite(C).all() else "it holds NaN or infinity"

    return load_checked(path, check)


def second_moments(
    model: Model,
    layers: Sequence[int],
    *,
    samples: int = DEFAULT_SAMPLES,
    corpus: str = "stats",
    max_tokens: int = 128,
    batch_size: int = 8,
    cancel: CancelToken | None = None,
    include_bos: bool = False,
) -> dict[int, Float[Tensor, "d_mlp d_mlp"]]:
    """E[k kᵀ] of the FFN keys at each layer, over ``samples`` corpus tokens.

    Always of the unedited model: applied edits are set aside while it runs (as
    :func:`~workbench.editing.handle.unedited` does), since C is cached under the
    unedited model's fingerprint. Texts from :func:`workbench.corpus.wiki_texts`
    (``corpus`` split) are cut to ``max_tokens`` tokens and run in batches; only
    real tokens count (padding and the BOS token are skipped: BOS is an attention
    sink whose huge activations would dominate C, and no subject ever sits there).
    Sums are kept in float64.

    Args:
        model: a loaded Model.
        layers: layers to compute (all in one pass over the corpus).
        samples: number of tokens to average over.
        corpus: the corpus split name (``"stats"``).
        max_tokens: truncation length of each text.
        batch_size: texts per forward pass.
        cancel: a CancelToken to stop early (nothing is cached then).
        include_bos: count the BOS positions too, as ROME's and AlphaEdit's published code
            does (cached under its own key).

    Returns:
        ``{layer: C}`` with C float64 on the CPU, ``[d_mlp, d_mlp]``.

    Example:
        >>> C = second_moments(model, [1, 2], samples=5_000)   # doctest: +SKIP
    """
    from workbench.corpus import wiki_texts
    from workbench.editing.handle import unedited

    if samples < 1:
        raise WorkbenchError("samples must be a positive number of tokens")
    layers = sorted({model.layer_index(int(l)) for l in layers})
    out: dict[int, Tensor] = {}
    todo = []
    for l in layers:
        cached = _load(_path(model, l, corpus, samples, include_bos), model.d_mlp)
        if cached is not None:
            out[l] = cached.double()
        else:
            todo.append(l)
    if not todo:
        return out

    texts = wiki_texts(corpus)
    sums = {l: torch.zeros(model.d_mlp, model.d_mlp, dtype=torch.float64, device=model.device) for l in todo}
    sites = {l: model.roles.hook("ffn_keys", l) for l in todo}
    pad = model.tokenizer.pad_token_id or 0
    bos = model.tokenizer.bos_token_id
    count = 0
    bar_total = samples
    # The pass stops after `samples` tokens, long before the corpus ends: a bar sized to
    # the corpus showed a 45-minute ETA for a one-minute job, so it counts batches only.
    bar = progress(iter(range(0, len(texts), batch_size)), desc=f"FFN key stats L{todo[0]}..{todo[-1]} (batches)", cancel=cancel)
    # C is cached under the unedited model's fingerprint: compute it with every edit set aside,
    # or a later clean run would read statistics of weights it does not have.
    with torch.no_grad(), unedited(model):
        for start in bar:
            batch = [model.encode(t)[:max_tokens] for t in texts[start : start + batch_size]]
            width = max(len(b) for b in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.bool)
            for i, b in enumerate(batch):
                ids[i, : len(b)] = torch.tensor(b)
                mask[i, : len(b)] = True
            keep = mask.clone()
            if bos is not None and not include_bos:
                keep &= ids != bos
            # Stop exactly at `samples` tokens so the cache key means what it says.
            remaining = samples - count
            flat = keep.flatten().nonzero().flatten()
            if len(flat) > remaining:
                cut = torch.zeros_like(keep.flatten())
                cut[flat[:remaining]] = True
                keep = cut.view_as(keep)
            keep = keep.to(model.device)
            # The pass stops at the highest layer asked for: nothing above it is needed.
            got = capture(model, ids, list(sites.values()), mask=mask.long().to(model.device))
            for l, site in sites.items():
                k = got[site][keep].double()  # [n_tokens, d_mlp]
                sums[l].addmm_(k.T, k)
            count += int(keep.sum())
            if count >= bar_total:
                break
    if count < samples:
        raise WorkbenchError(f"the {corpus!r} corpus has only {count} tokens at {max_tokens} per text; ask for fewer samples")
    for l in todo:
        C = (sums[l] / count).cpu()
        save_checked(_path(model, l, corpus, samples, include_bos), C.float())  # float32 on disk: half the size, ample precision
        out[l] = C.float().double()  # same values whether fresh or from the cache
    return out


def second_moment(model: Model, layer: int, **kwargs) -> Float[Tensor, "d_mlp d_mlp"]:
    """C for one layer; see :func:`second_moments`."""
    layer = model.layer_index(int(layer))
    return second_moments(model, [layer], **kwargs)[layer]


def with_ridge(C: Float[Tensor, "d d"], reg: float) -> Float[Tensor, "d d"]:
    """``C + reg·mean(diag C)·I`` in float64: the matrix ROME inverts."""
    C = C.double()
    ridge = reg * float(C.diagonal().mean()) if C.numel() else 0.0
    return C + ridge * torch.eye(C.shape[0], dtype=torch.float64, device=C.device)


def ridge_solver(
    model: Model, layer: int, *, samples: int = DEFAULT_SAMPLES, reg: float = 1e-4, include_bos: bool = False
) -> Callable[[Tensor], Tensor]:
    """``x ↦ (C + reg·mean(diag C)·I)⁻¹ x`` in float64, for C of ``layer``.

    The Cholesky factor is computed once per (layer, samples, reg) and kept on the
    model, so each later ROME edit solves in O(d_mlp²) instead of factorising
    a d_mlp × d_mlp matrix again (0.13 s per edit on gemma-3-270m).

    Example:
        >>> solve = ridge_solver(model, 4)                          # doctest: +SKIP
        >>> u = solve(k)                                            # doctest: +SKIP
    """
    layer = model.layer_index(int(layer))

    def build() -> Tensor:
        C = second_moment(model, layer, samples=samples, include_bos=include_bos).to(model.device)
        factor, info = torch.linalg.cholesky_ex(with_ridge(C, reg))
        if int(info) != 0:
            raise WorkbenchError(
                f"C + ridge of layer {layer} is not positive definite (reg={reg}); use a larger reg"
            )
        return factor

    # C is the unedited model's (cached under its fingerprint): no edit makes the factor stale.
    factor = model.memo.get(("ridge_factor", layer, samples, reg, include_bos, str(model.device)), build)
    return lambda x: torch.cholesky_solve(x.double().reshape(len(x), -1), factor).reshape(x.shape)


def statistics_files(model: Model, method: str, *, layers: Sequence[int] | None = None,
                     samples: int = DEFAULT_SAMPLES) -> list:
    """The cache files of C that ``method`` reads on ``layers`` (its default if None), computed now if missing.

    A parallel run calls this once in the driver and ships the files to its workers,
    so that C is computed once, not once per worker. Empty for methods that read no C.

    Example:
        >>> [p.name for p in statistics_files(model, "rome")]      # doctest: +SKIP
        ['3f2a..._stats_20000tok_L4.pt']
    """
    from workbench.editing.registry import method_spec

    spec = method_spec(method)
    if not spec.key_statistics:
        return []
    layers = [model.layer_index(int(l)) for l in layers] if layers is not None else spec.default_layers(model)
    # A method may read other statistics than the default (AlphaEdit as published: more tokens, BOS kept).
    samples = spec.statistics.get("samples", samples)
    include_bos = spec.statistics.get("include_bos", False)
    second_moments(model, layers, samples=samples, include_bos=include_bos)
    return [_path(model, l, "stats", samples, include_bos) for l in layers]
