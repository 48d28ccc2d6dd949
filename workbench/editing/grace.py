"""GRACE (Hartvigsen et al., NeurIPS 2023): a codebook at one FFN; the weights are not touched.

An edit adds codebook entries at layer ``l``. An entry is a *key* (the FFN's input
at one position of the edit prompt), a *value* (an FFN output that makes the model
say the next token of the new object there) and a *deferral radius*. In every
forward pass, a position whose FFN input lies within an entry's radius of its key
gets the entry's value as the FFN output; every other position keeps the layer's own
output, bitwise. A fact whose new object is m tokens long gets m entries: the last
prompt position and the positions of the object's first m-1 tokens, so that
teacher-forced scoring and generation both continue the object.

How this follows the paper and where it differs (our reading):

* Keys are read at every position, the decision made per position: a paraphrase
  has another last-position key, so it is answered only if it falls inside the
  radius (the paper finds GRACE generalises poorly; this is why).
* Values are found by gradient steps on the entry values alone (Adam, from the
  layer's own outputs), until the new object's NLL is below ``stop_nll``.
* Radii: each entry starts at ``radius`` x ‖key‖ (a relative radius, so it carries
  across models and layers; distances are Euclidean). Two entries that want
  different values never overlap: each radius is at most half the distance to the
  nearest such entry, and a newer entry with the same key shadows the older one.
  The effective radii are computed from the active entries whenever they change,
  not stored, so adding an edit and reverting it is exact. The paper's radius
  *expansion* for a new entry with the same label is not built (every entry has its
  own label here).

Default radius, measured by :func:`distance_sweep` (``benchmarks/grace_radius.py``)
on the first 40 bundled facts at the default layer of gemma-3-270m: see
:data:`DEFAULT_RADIUS`.

Example:
    >>> h = wb.edit(model, fact, method="grace")                     # doctest: +SKIP
    >>> wb.probe(model, fact.text).prompts[0].top[0].token           # doctest: +SKIP
    ' Rome'
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor

from workbench.checks import Number, Whole
from workbench.editing.handle import EditHandle, commit_prompt_edit
from workbench.editing.overlays import (
    LayerOverlay,
    decode_tensor,
    encode_tensor,
    register_loader,
)
from workbench.editing.defaults import memory_layers
from workbench.editing.registry import register_method
from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.core.model import Model
from workbench.probing import target_ids

#: Relative deferral radius (‖h - key‖ / ‖key‖). See the module docstring and
#: ``benchmarks/grace_radius.py`` for the distances it was chosen from.
DEFAULT_RADIUS = 0.2


def default_layer(model: Model) -> int:
    """GRACE's default layer (:func:`~workbench.editing.defaults.memory_layer`: two thirds of the way up)."""
    from workbench.editing.defaults import memory_layer

    return memory_layer(model)


class GraceOverlay(LayerOverlay):
    """Codebook entries of one GRACE edit; all active ones at a layer form the codebook.

    Attributes:
        keys / values: ``[n, d_model]`` float32.
        radii: ``[n]`` the entries' own radii (absolute), before conflicts shrink them.
        labels: what each entry answers (entries with different labels never overlap).
    """

    kind = "grace"

    def __init__(self, layer: int, keys: Tensor, values: Tensor, radii: Tensor, labels: Sequence[str],
                 *, active_list: list | None = None) -> None:
        super().__init__(layer, active_list)
        if not (len(keys) == len(values) == len(radii) == len(labels)):
            raise WorkbenchError("a GRACE memory needs as many keys, values, radii and labels")
        self.keys, self.values = keys.detach().float().cpu(), values.detach().float().cpu()
        self.radii, self.labels = radii.detach().float().cpu(), list(labels)
        self._book_cache: tuple | None = None

    def __repr__(self) -> str:
        return f"GraceOverlay(layer={self.layer}, entries={len(self.keys)})"

    # -- the codebook over all members ---------------------------------------------------
    def codebook(self, members: list | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(keys, values, effective radii) of every active entry at this layer, oldest first."""
        members = self.members() if members is None else members
        ident = tuple(id(m) for m in members)
        if self._book_cache is not None and self._book_cache[0] == ident:
            return self._book_cache[1]
        keys = torch.cat([m.keys for m in members])
        values = torch.cat([m.values for m in members])
        own = torch.cat([m.radii for m in members])
        labels = [lab for m in members for lab in m.labels]
        book = (keys, values, effective_radii(keys, own, labels))
        self._book_cache = (ident, book)
        return book

    def _nearest(self, inputs: Tensor, members: list | None = None) -> tuple[Tensor, Tensor]:
        """For FFN inputs ``[..., d_model]`` flattened: (the nearest entry within its radius, whether any is)."""
        keys, _, radii = self.codebook(members)
        flat = inputs.detach().reshape(-1, inputs.shape[-1]).float()
        dist = torch.cdist(flat, keys.to(flat.device), compute_mode="donot_use_mm_for_euclid_dist")
        dist = torch.where(dist < radii.to(dist.device), dist, torch.full_like(dist, math.inf))
        best_d, best = dist.min(dim=1)
        return best, torch.isfinite(best_d)

    def respond(self, inputs: Tensor, output: Tensor, members: list) -> Tensor | None:
        values = self.codebook(members)[1]
        best, hit = self._nearest(inputs, members)
        if not bool(hit.any()):
            return None  # nothing claimed: the layer's own output object, bitwise
        new = output.clone()
        flat_out = new.view(-1, new.shape[-1])
        flat_out[hit] = values.to(device=new.device, dtype=new.dtype)[best[hit]]
        return new

    def matches(self, inputs: Tensor) -> Tensor:
        """For FFN inputs ``[..., d_model]``: the codebook entry each position gets, -1 for none."""
        best, hit = self._nearest(inputs)
        return torch.where(hit, best, torch.full_like(best, -1)).reshape(inputs.shape[:-1]).cpu()

    # -- saving ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"kind": self.kind, "layer": self.layer, "keys": encode_tensor(self.keys),
                "values": encode_tensor(self.values), "radii": encode_tensor(self.radii), "labels": self.labels}

    @classmethod
    def from_dict(cls, d: dict, model: Model | None = None) -> GraceOverlay:
        """Rebuild from :meth:`to_dict` (pass ``model`` to join its codebook)."""
        try:
            layer, labels = int(d["layer"]), [str(x) for x in d["labels"]]
        except (KeyError, TypeError, ValueError):
            raise WorkbenchError("saved GRACE memory is corrupt (no layer or labels)") from None
        if model is not None:
            layer = model.layer_index(layer)
        mem = cls(layer, decode_tensor(d.get("keys", {}), what="GRACE keys"),
                  decode_tensor(d.get("values", {}), what="GRACE values"),
                  decode_tensor(d.get("radii", {}), what="GRACE radii"), labels,
                  active_list=model.prompt_edits if model is not None else None)
        if model is not None and mem.keys.shape[-1] != model.d_model:
            raise WorkbenchError(f"saved GRACE keys have width {mem.keys.shape[-1]}, the model's is {model.d_model}")
        return mem


def effective_radii(keys: Tensor, radii: Tensor, labels: Sequence[str]) -> Tensor:
    """Each entry's radius after conflicts: at most half the distance to an entry with another label.

    A later entry whose key equals an earlier one's (closer than 1e-6 · ‖key‖) with another
    label shadows it: the earlier one's radius becomes 0 and the pair is not shrunk otherwise.

    Example:
        >>> k = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
        >>> effective_radii(k, torch.tensor([5.0, 5.0]), ["a", "b"]).tolist()
        [0.5, 0.5]
    """
    n = len(keys)
    r = radii.clone().float()
    if n < 2:
        return r
    dist = torch.cdist(keys.double(), keys.double(), compute_mode="donot_use_mm_for_euclid_dist")
    # Labels as integers, compared as one tensor: a Python double loop here was O(n²) per edit.
    ids: dict[str, int] = {}
    lab = torch.tensor([ids.setdefault(x, len(ids)) for x in labels])
    same = lab[:, None] == lab[None, :]
    tiny = 1e-6 * keys.double().norm(dim=1).clamp_min(1e-12)
    equal = (dist <= tiny[:, None]) & ~same
    later = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    shadowed = (equal & later).any(dim=1)  # some later entry has the same key and another label
    conflict = ~same & ~equal
    half = torch.where(conflict, dist / 2, torch.full_like(dist, math.inf)).min(dim=1).values
    r = torch.minimum(r.double(), half).float()
    r[shadowed] = 0.0
    return r


def _edit_positions(model: Model, fact: Fact) -> tuple[list[int], list[int], list[int]]:
    """(sequence ids, positions that predict the new object's tokens, those tokens)."""
    prompt = model.contextualize(fact.text)
    ids = model.encode(prompt)
    tgt = target_ids(model, prompt, fact.target_new)
    seq = ids + tgt[:-1]
    return seq, list(range(len(ids) - 1, len(seq))), tgt


def fit_entries(model: Model, layer: int, fact: Fact, *, steps: int = 100, lr: float = 0.1,
                stop_nll: float = 0.05) -> dict:
    """Keys at the positions that predict ``fact.target_new`` and values that make the model say it.

    Returns ``{"keys", "values", "init", "nll", "nll_before", "steps"}`` (keys and values ``[m, d_model]``).
    Reads the model through a temporary hook; nothing stays on it.

    Raises:
        WorkbenchError: the optimisation produced NaN or inf.
    """
    seq, pos, tgt = _edit_positions(model, fact)
    tokens = torch.tensor([seq], device=model.device)
    pos_t = torch.tensor(pos, device=model.device)
    tgt_t = torch.tensor(tgt, device=model.device)
    found: dict[str, Tensor] = {}
    values: Tensor | None = None

    def hook(module, args, output):
        nonlocal values
        if "keys" not in found:
            found["keys"] = args[0][0, pos_t].detach().float().clone()
            found["init"] = output[0, pos_t].detach().float().clone()
            values = found["init"].clone().requires_grad_(True)
        new = output.clone()
        new[0, pos_t] = values.to(new.dtype)
        return new

    module = model.bridge.blocks[layer].mlp
    handle = module.register_forward_hook(hook)
    best, best_nll, nll_value, step, first_nll = None, math.inf, math.inf, 0, math.nan
    opt = None
    try:
        with torch.enable_grad():
            for step in range(1, steps + 1):
                hidden = model.hidden(tokens)[0, pos_t]
                logp = model.logits_from_hidden(hidden).float().log_softmax(-1)
                nll = -logp[torch.arange(len(tgt)), tgt_t].mean()
                nll_value = float(nll.detach())
                if not math.isfinite(nll_value):
                    raise WorkbenchError(f"the GRACE value search for {fact.subject!r} produced NaN/inf (step {step}); "
                                         "nothing changed")
                if step == 1:
                    first_nll = nll_value
                if nll_value < best_nll:
                    best_nll, best = nll_value, values.detach().clone()
                if nll_value < stop_nll:
                    break
                if opt is None:
                    opt = torch.optim.Adam([values], lr=lr)
                opt.zero_grad()
                nll.backward()
                opt.step()
    finally:
        handle.remove()
    return {"keys": found["keys"].cpu(), "values": best.cpu(), "init": found["init"].cpu(),
            "nll": best_nll, "nll_before": first_nll, "steps": step}


@register_method(
    "grace", order=7, kind="overlay", layers=memory_layers, holds="a codebook",
    summary="GRACE (Hartvigsen et al. 2023): a codebook at one FFN answers prompts near a stored key",
    description="GRACE (Hartvigsen et al. 2023): a codebook at one layer replaces the hidden state of prompts "
                "near a stored key; no weight changes.", limits={"radius": Number(0, 100, strict=True), "steps": Whole(1, 10_000),
                                  "lr": Number(0, 100, strict=True), "stop_nll": Number(0, 100, strict=True)})
def grace(model: Model, facts: list[Fact], *, layers=None, radius: float = DEFAULT_RADIUS, steps: int = 100,
          lr: float = 0.1, stop_nll: float = 0.05) -> EditHandle:
    """Edit by adding codebook entries at one FFN (no weight changes).

    Args:
        model: a loaded Model (its weights are not touched).
        facts: facts with ``target_new``; each adds one entry per token of its new object.
        layers: the one layer (default :func:`default_layer`: two thirds of the way up).
        radius: deferral radius relative to each key's norm (default measured, see module docstring).
        steps, lr, stop_nll: the value search (Adam on the entry values).

    Example:
        >>> h = wb.edit(model, fact, method="grace", radius=0.3)   # doctest: +SKIP
        >>> h.info["entries"]                                        # doctest: +SKIP
        1
    """
    from workbench.editing.defaults import single_layer

    layer = single_layer(model, layers if layers is not None else [default_layer(model)], "grace")
    start = time.perf_counter()
    keys, values, labels, nlls, firsts = [], [], [], [], []
    for fact in facts:
        fit = fit_entries(model, layer, fact, steps=steps, lr=lr, stop_nll=stop_nll)
        keys.append(fit["keys"])
        values.append(fit["values"])
        nlls.append(fit["nll"])
        firsts.append(fit["nll_before"])
        # One label per (fact, position): two entries that must say different tokens never overlap.
        labels += [f"{fact.text}\x00{fact.target_new.strip()}\x00{j}" for j in range(len(fit["keys"]))]
    k = torch.cat(keys)
    mem = GraceOverlay(layer, k, torch.cat(values), radius * k.norm(dim=1), labels, active_list=model.prompt_edits)
    return commit_prompt_edit(
        model, "grace", [f.to_dict() for f in facts], mem,
        info={"layer": layer, "entries": len(k), "radius": radius, "nll": nlls, "nll_before": firsts,
              "codebook_size": sum(len(m.keys) for m in mem.members()) + len(k)},
        seconds=time.perf_counter() - start, layers=[layer],
    )


@register_loader("grace")
def _load(saved: dict, model: Model | None = None) -> GraceOverlay:
    return GraceOverlay.from_dict(saved, model)


def distance_sweep(model: Model, facts: Sequence[Fact], layer: int | None = None) -> dict:
    """Relative distances from each fact's key (last prompt position) to its paraphrases' and neighbours'.

    What :data:`DEFAULT_RADIUS` is chosen from: a paraphrase inside the radius is
    answered (generalisation), a neighbour inside it is wrongly answered (locality).
    Returns percentiles of both and the share inside each of a few radii.
    """
    import numpy as np

    layer = default_layer(model) if layer is None else model.layer_index(layer)
    module = model.bridge.blocks[layer].mlp

    def last_key(prompt: str) -> Tensor:
        got = []
        h = module.register_forward_hook(lambda m, a, o: got.append(a[0][0, -1].detach().float().clone()))
        try:
            with torch.no_grad():
                model.hidden(model.tokens(model.contextualize(prompt)))
        finally:
            h.remove()
        return got[0]

    para, neigh = [], []
    for f in facts:
        k = last_key(f.text)
        for p in f.paraphrase_prompts:
            para.append(float((last_key(p) - k).norm() / k.norm()))
        for p in f.neighborhood_prompts:
            neigh.append(float((last_key(p) - k).norm() / k.norm()))
    pct = lambda a: [round(float(x), 3) for x in np.percentile(a, [5, 25, 50, 75, 95])] if a else []
    radii = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    return {
        "layer": layer, "n_facts": len(facts), "n_paraphrase": len(para), "n_neighborhood": len(neigh),
        "paraphrase_percentiles_5_25_50_75_95": pct(para), "neighborhood_percentiles_5_25_50_75_95": pct(neigh),
        "inside": [{"radius": r, "paraphrase": float(np.mean([d < r for d in para])) if para else None,
                    "neighborhood": float(np.mean([d < r for d in neigh])) if neigh else None} for r in radii],
    }
