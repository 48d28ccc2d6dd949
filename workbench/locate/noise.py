"""The noise of causal tracing: its scale (subject-embedding std) and the fixed-seed draw."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.facts import ASSETS, read_facts
from workbench.core.activations import capture
from workbench.core.model import Model

_STD_CACHE: dict[tuple[str, str], float] = {}
KNOWN_1000 = ASSETS / "data" / "known_1000.json"


def embedding_std(model: Model, subjects: Sequence[str] | None = None) -> float:
    """Standard deviation of subject-token embeddings as they enter block 0.

    Like ROME, over all elements of the embedding rows of the tokens of a fixed
    set of subjects: by default the 1,209 subjects of ROME's ``known_1000``
    (each tokenised with a leading space, as subjects mostly appear mid-sentence),
    so the noise scale is a property of the model, not of the prompt. Falls back
    to the embedding matrix's rows over the whole vocabulary when the data set is
    absent. Cached per model.

    Example:
        >>> round(embedding_std(model), 3)  # doctest: +SKIP
        0.986
    """
    if subjects is None:
        if KNOWN_1000.exists():
            subjects = sorted({f.subject for f in read_facts(KNOWN_1000)})
            key_name = "known_1000"
        else:
            subjects, key_name = [], "vocabulary"
    else:
        subjects = list(subjects)
        key_name = "|".join(subjects)
    key = (model.fingerprint, key_name)
    if key in _STD_CACHE:
        return _STD_CACHE[key]
    if subjects:
        counts: dict[int, int] = {}
        for s in subjects:
            for i in model.encode(" " + s.strip(), prompt=False):
                counts[i] = counts.get(i, 0) + 1
        ids = list(counts)
        weights = torch.tensor([counts[i] for i in ids], dtype=torch.float64)
    else:
        ids = list(range(model.tokenizer.vocab_size))
        weights = torch.ones(len(ids), dtype=torch.float64)
    rows = _embed_rows(model, ids).double()
    # std over all elements, each token weighted by how often it occurs in the subjects.
    w = weights[:, None].expand_as(rows).to(rows.device)
    mean = (rows * w).sum() / w.sum()
    var = ((rows - mean) ** 2 * w).sum() / (w.sum() - 1)
    value = float(var.sqrt())
    _STD_CACHE[key] = value
    return value


def _embed_rows(model: Model, ids: list[int], chunk: int = 4096) -> Float[Tensor, "n d_model"]:
    """Embeddings of single tokens as they enter block 0 (read at the embed hook,
    so family-specific scaling such as Gemma's sqrt(d_model) is included)."""
    out = []
    for i in range(0, len(ids), chunk):
        batch = torch.tensor(ids[i : i + chunk], device=model.device)[:, None]
        site = model.roles.hook("embed")
        # The pass stops at the embedding: no block runs.
        out.append(capture(model, batch, [site], positions=0)[site].detach())
    return torch.cat(out)


def make_noise(samples: int, n_tokens: int, d_model: int, std: float, seed: int) -> Float[Tensor, "samples n_tokens d_model"]:
    """The Gaussian noise added to the subject's embeddings (fixed seed, CPU generator
    so the same seed gives the same noise on any device)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(samples, n_tokens, d_model, generator=gen) * std
