"""WISE (Wang et al., NeurIPS 2024): a side memory for one FFN value matrix, and a router.

The FFN of block ``l`` reads keys ``a`` (its hidden activations) and writes
``W a`` with its value matrix W. WISE keeps a *side* copy W' of W that holds the
edits and leaves W alone. At every position a router compares the two:
the activation score ``‖(W' - W) a‖`` is large where a key resembles an edited
one; above the threshold ``tau`` the position reads the side memory (``W' a``),
below it the main one (``W a``, bitwise the unedited model).

How it is built here (our design, following the paper's idea):

* The side memory is stored as W' = W + Σ_i B_iᵀ Â_i, one term per edit: Â_i are
  the edit's key activations (rows scaled to 1/‖a‖, so a key's own coefficient is 1)
  at the positions that predict the new object (bare prompt and ``n_prefixes``
  prefixed ones), and B_i is what is learnt. Gradient steps on a full W' from
  these prompts move it only inside this span too; holding it factored keeps an
  edit a few kilobytes and makes its revert exact (the terms are summed in a fixed
  order at run time, never accumulated into a matrix).
* Each edit learns its B by Adam on: the new object's NLL with the side memory read
  at the edit positions; WISE's routing margins, hinge losses that push the score
  above ``2 tau`` at the edit positions and below ``tau / 2`` at positions of
  held-out corpus text and at the end of the edit prompt with other subjects in it
  (:data:`CONTRAST_SUBJECTS`: the last-position keys of such prompts are close to the
  edit's, GRACE's distances show it); and a term that keeps earlier edits' side outputs where
  they were (sequential edits share one side memory).
* ``tau`` is set with the first edit at a layer: ``tau_frac`` x the median
  ‖W a‖ over the corpus positions, and shared by the later ones.
* Routing is decided per position, not once per prompt as in the paper.
* Left out: the paper's knowledge shards (several side memories trained on random
  parameter subsets, merged with Ties-Merging) and the merge schedule: here there
  is one side memory per layer. docs/concepts.md says so.

Example:
    >>> h = wb.edit(model, fact, method="wise")                      # doctest: +SKIP
    >>> h.info["routed"]                                              # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor

from workbench.checks import Number, Whole
from workbench.editing.grace import default_layer
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
from workbench.core.model import Model, StopForward
from workbench.probing import target_ids

#: the router threshold as a share of the median FFN-output norm on corpus text. On the first
#: 4 bundled facts of gemma-3-270m edited in sequence at layer 12: with 0.5 (tau 1.5) and the
#: corpus hinge at weight 1, the first edit sent every "... developed/produced by" prompt to
#: Suzuki and later edits did not hold; with 2.0 and weight 10 all 4 held, 2 of 4 unrelated
#: paraphrase/neighbour prompts moved (both neighbours share a word of the subject: "BMW M3
#: DTM", "Fiat 520"), and generation stopped repeating the new object.
DEFAULT_TAU_FRAC = 2.0


class WiseOverlay(LayerOverlay):
    """One WISE edit's share of the side memory at ``layer``.

    Attributes:
        keys: ``[t, d_mlp]`` Â (the edit's key activations, whitened; a key's own coefficient is 1).
        acts: ``[t, d_mlp]`` the raw key activations.
        values: ``[t, d_model]`` B (what each key adds to the side memory's output).
        tau: the router threshold (absolute; the first member's is the memory's).
    """

    kind = "wise"

    def __init__(self, layer: int, keys: Tensor, values: Tensor, tau: float, *, acts: Tensor | None = None,
                 active_list: list | None = None) -> None:
        super().__init__(layer, active_list)
        # The raw key activations the edit was learnt at (later edits keep their outputs).
        self.acts = (acts if acts is not None else torch.zeros(0, keys.shape[-1])).detach().float().cpu()
        if len(keys) != len(values):
            raise WorkbenchError("a WISE memory needs as many keys as values")
        if not (math.isfinite(tau) and tau > 0):
            raise WorkbenchError(f"WISE router threshold must be a positive number, got {tau}")
        self.keys, self.values = keys.detach().float().cpu(), values.detach().float().cpu()
        self.tau = float(tau)
        self._cache: tuple | None = None

    def __repr__(self) -> str:
        return f"WiseOverlay(layer={self.layer}, keys={len(self.keys)}, tau={self.tau:.3g})"

    @staticmethod
    def module(model: Model, layer: int):
        return model.bridge.blocks[layer].mlp.out  # the value matrix: its input is the FFN keys

    def side(self, members: list | None = None) -> tuple[Tensor, Tensor, float]:
        """(Â, B, tau) of the whole side memory at this layer (all active members, oldest first)."""
        members = self.members() if members is None else members
        ident = tuple(id(m) for m in members)
        if self._cache is None or self._cache[0] != ident:
            self._cache = (ident, (torch.cat([m.keys for m in members]), torch.cat([m.values for m in members]),
                                   members[0].tau))
        return self._cache[1]

    def delta(self, acts: Tensor, members: list | None = None) -> Tensor:
        """(W' - W) a for FFN keys ``acts`` ``[..., d_mlp]``: what the side memory adds."""
        keys, values, _ = self.side(members)
        flat = acts.reshape(-1, acts.shape[-1]).float()
        out = (flat @ keys.to(flat.device).T) @ values.to(flat.device)
        return out.reshape(*acts.shape[:-1], values.shape[-1])

    def routed(self, acts: Tensor) -> Tensor:
        """Which positions of ``acts`` ``[..., d_mlp]`` read the side memory."""
        return self.delta(acts).norm(dim=-1) > self.side()[2]

    def respond(self, inputs: Tensor, output: Tensor, members: list) -> Tensor | None:
        delta = self.delta(inputs.detach(), members)
        hit = delta.norm(dim=-1) > self.side(members)[2]
        if not bool(hit.any()):
            return None  # every position reads the main memory: the layer's own output, bitwise
        return torch.where(hit[..., None], output + delta.to(output.dtype), output)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "layer": self.layer, "keys": encode_tensor(self.keys),
                "values": encode_tensor(self.values), "acts": encode_tensor(self.acts), "tau": self.tau}

    @classmethod
    def from_dict(cls, d: dict, model: Model | None = None) -> WiseOverlay:
        """Rebuild from :meth:`to_dict` (pass ``model`` to join its side memory)."""
        try:
            layer, tau = int(d["layer"]), float(d["tau"])
        except (KeyError, TypeError, ValueError):
            raise WorkbenchError("saved WISE memory is corrupt (no layer or threshold)") from None
        if model is not None:
            layer = model.layer_index(layer)
        mem = cls(layer, decode_tensor(d.get("keys", {}), what="WISE keys"),
                  decode_tensor(d.get("values", {}), what="WISE values"), tau,
                  acts=decode_tensor(d.get("acts", {}), what="WISE key activations"), active_list=model.prompt_edits if model is not None else None)
        if model is not None and (mem.keys.shape[-1] != model.d_mlp or mem.values.shape[-1] != model.d_model):
            raise WorkbenchError("saved WISE memory does not fit this model's FFN")
        return mem


def _acts(model: Model, layer: int, tokens: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """FFN keys at ``layer`` and the value matrix's output there, for a batch (no gradient)."""
    got = {}

    def grab(module, args, output):
        got["a"], got["out"] = args[0].detach().float(), output.detach().float()
        raise StopForward

    h = WiseOverlay.module(model, layer).register_forward_hook(grab)
    try:
        with torch.no_grad():
            model.run_for_hooks(tokens, mask)
    finally:
        h.remove()
    return got["a"], got["out"]


def corpus_keys(model: Model, layer: int, *, texts: int = 8, tokens: int = 48) -> tuple[Tensor, Tensor]:
    """FFN keys and output norms at ``layer`` over corpus positions (what must stay unrouted).

    From the statistics split: the held-out split is where perplexity is measured, and a
    router trained to leave those very texts alone would flatter it.
    """
    from workbench.corpus import wiki_texts

    acts, norms = [], []
    for text in wiki_texts("stats", limit=texts):
        ids = model.encode(text)[:tokens]
        a, out = _acts(model, layer, torch.tensor([ids], device=model.device))
        acts.append(a[0, 1:])  # position 0 (BOS) is an outlier in every model
        norms.append(out[0, 1:].norm(dim=-1))
    return torch.cat(acts).cpu(), torch.cat(norms).cpu()


#: Subjects put into an edit's own prompt as routing negatives: the same relation about
#: something else must read the main memory (fixed, varied, none of them a dataset's).
CONTRAST_SUBJECTS = ("Paris", "the Moon", "Microsoft", "Albert Einstein", "the Toyota Corolla",
                     "the Amazon River", "Japan", "the violin")


def contrast_keys(model: Model, layer: int, facts: Sequence[Fact], n: int) -> Tensor:
    """FFN keys at the last position of each fact's prompt with ``n`` other subjects in it."""
    prompts = []
    for f in facts:
        others = [s for s in CONTRAST_SUBJECTS if s.casefold() != f.subject.casefold()][:n]
        prompts += [model.contextualize(f.prompt.format(s)) for s in others]
    if not prompts:
        return torch.zeros(0, model.d_mlp)
    from workbench.probing import _pad_batch, _pad_id

    seqs = [model.encode(p) for p in prompts]
    ids, mask = _pad_batch(seqs, _pad_id(model))
    acts, _ = _acts(model, layer, ids.to(model.device), mask.to(model.device))
    last = torch.tensor([len(s) - 1 for s in seqs], device=acts.device)
    return acts[torch.arange(len(seqs), device=acts.device), last].cpu()


def edit_rows(model: Model, fact: Fact, prefixes: Sequence[str], *,
              whole_object: bool = False) -> list[tuple[list[int], list[int], list[int]]]:
    """(ids, positions predicting the new object, its tokens) for the bare and prefixed prompts.

    ``ids`` end before the object's last token (all a prediction needs), or after it with
    ``whole_object`` (WISE as published scores the whole "prompt + object" text).
    """
    rows = []
    for prefix in ("", *prefixes):
        prompt = model.contextualize(prefix + fact.text)
        ids = model.encode(prompt)
        tgt = target_ids(model, prompt, fact.target_new)
        rows.append((ids + (tgt if whole_object else tgt[:-1]), list(range(len(ids) - 1, len(ids) - 1 + len(tgt))),
                     tgt))
    return rows


def fit_side(model: Model, layer: int, facts: Sequence[Fact], *, tau: float | None, tau_frac: float, n_prefixes: int,
             n_contrast: int, steps: int, lr: float, stop_nll: float, previous: list[WiseOverlay],
             retain: float = 10.0, whiten_ridge: float = 0.1, margin_weight: float = 10.0) -> dict:
    """Learn one edit's side-memory term: keys from the edit prompts, values by Adam (see module docstring)."""
    from workbench.editing.optimize import context_prefixes
    from workbench.probing import _pad_batch, _pad_id

    irr, out_norms = corpus_keys(model, layer)
    if tau is None:
        tau = tau_frac * float(out_norms.median())
    irr = torch.cat([irr, contrast_keys(model, layer, facts, n_contrast)])
    prefixes = context_prefixes(model, n_prefixes) if n_prefixes else []
    rows = [r for f in facts for r in edit_rows(model, f, prefixes)]
    ids, mask = _pad_batch([r[0] for r in rows], _pad_id(model))
    ids, mask = ids.to(model.device), mask.to(model.device)
    r_idx = torch.tensor([i for i, r in enumerate(rows) for _ in r[1]], device=model.device)
    p_idx = torch.tensor([p for r in rows for p in r[1]], device=model.device)
    tok = torch.tensor([t for r in rows for t in r[2]], device=model.device)
    # Each row counts equally, whatever its object's length.
    w = torch.tensor([1.0 / len(r[2]) for r in rows for _ in r[2]], device=model.device) / len(rows)

    acts, _ = _acts(model, layer, ids, mask)
    a_edit = acts[r_idx, p_idx]  # [t, d_mlp]
    irr = irr.to(model.device)
    # Keys whitened against the negatives: Â = M⁻¹a / (aᵀM⁻¹a), M = XᵀX/N + λI over the corpus and
    # contrast keys X. A key's own coefficient is 1; a negative's (and a key like it) is small,
    # where with plain a/‖a‖² a same-relation prompt about another subject got most of the edit.
    X = irr.double()
    M = X.T @ X / len(X)
    M += whiten_ridge * float(M.diagonal().mean()) * torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    sol = torch.linalg.solve(M, a_edit.double().T).T
    keys = (sol / (sol * a_edit.double()).sum(-1, keepdim=True)).float()
    values = torch.zeros(len(keys), model.d_model, device=model.device, requires_grad=True)
    old = list(previous)
    # Earlier edits' own key activations: their side outputs must stay where they were.
    old_acts = torch.cat([m.acts for m in old]).to(model.device) if old else None
    irr_old = old[0].delta(irr, old) if old else torch.zeros(len(irr), model.d_model, device=model.device)
    edit_old = (old[0].delta(a_edit, old) if old else torch.zeros_like(values))

    def hook(module, args, output):
        # The side memory read at the edit positions (the router is trained to send them there).
        add = torch.zeros_like(output)
        add[r_idx, p_idx] = (edit_old + (a_edit @ keys.T) @ values).to(output.dtype)
        return output + add

    # While learning, the training hook reads the whole side memory at the edit positions; the
    # earlier members' own hook would add their part a second time where it routes, so it is off.
    for m in old:
        m.detach()
    h = WiseOverlay.module(model, layer).register_forward_hook(hook)
    opt = torch.optim.Adam([values], lr=lr)
    best, best_nll, step, first_nll = None, math.inf, 0, math.nan
    try:
        with torch.enable_grad():
            for step in range(1, steps + 1):
                hidden = model.hidden(ids, mask)[r_idx, p_idx]
                logp = model.logits_from_hidden(hidden).float().log_softmax(-1)
                nll = -(logp[torch.arange(len(tok)), tok] * w).sum()
                score_edit = (edit_old + (a_edit @ keys.T) @ values).norm(dim=-1)
                score_irr = (irr_old + (irr @ keys.T) @ values).norm(dim=-1)
                margin = (torch.relu(2 * tau - score_edit).mean()
                          + margin_weight * torch.relu(score_irr - tau / 2).mean()) / tau
                loss = nll + margin
                if old:
                    moved = (old_acts @ keys.T) @ values
                    loss = loss + retain * moved.pow(2).sum(-1).mean() / tau**2
                nll_value = float(nll.detach())
                if not math.isfinite(float(loss.detach())):
                    raise WorkbenchError(f"the WISE side-memory search produced NaN/inf (step {step}); nothing changed")
                if step == 1:
                    first_nll = nll_value
                done = nll_value < stop_nll and float(margin.detach()) == 0.0
                if nll_value < best_nll or done:
                    best_nll, best = nll_value, values.detach().clone()
                if done:
                    break
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        h.remove()
        for m in old:
            m.attach(model)
    return {"keys": keys.cpu(), "values": best.cpu(), "acts": a_edit.cpu(), "tau": tau, "nll": best_nll, "nll_before": first_nll,
            "steps": step}


@register_method(
    "wise", order=8, kind="overlay", layers=memory_layers, holds="a side memory with a router",
    summary="WISE (Wang et al. 2024): a side copy of one FFN value matrix with a router",
    description="WISE (Wang et al. 2024): a side copy of one FFN holds the edits; a router sends the prompts it "
                "recognises there; the main weights stay.", limits={"tau_frac": Number(0, 100, strict=True), "n_prefixes": Whole(0, 20),
                                 "n_contrast": Whole(0, len(CONTRAST_SUBJECTS)),
                                 "steps": Whole(1, 10_000), "lr": Number(0, 100, strict=True),
                                 "stop_nll": Number(0, 100, strict=True)})
def wise(model: Model, facts: list[Fact], *, layers=None, tau_frac: float = DEFAULT_TAU_FRAC, n_prefixes: int = 2,
         n_contrast: int = 8, steps: int = 60, lr: float = 0.1, stop_nll: float = 0.05) -> EditHandle:
    """Edit by writing the facts into the side memory of one FFN value matrix (no weight changes).

    Args:
        model: a loaded Model (its weights are not touched).
        facts: facts with ``target_new`` (several: one term learnt for all).
        layers: the one layer (default: two thirds of the way up, as GRACE).
        tau_frac: router threshold relative to the median FFN-output norm (the first edit at a layer sets it).
        n_prefixes: prefixed copies of the edit prompt trained on besides the bare one.
        n_contrast: the edit prompt with this many other subjects (:data:`CONTRAST_SUBJECTS`)
            as routing negatives, besides held-out corpus text.
        steps, lr, stop_nll: the value search (Adam).

    Example:
        >>> h = wb.edit(model, fact, method="wise")            # doctest: +SKIP
    """
    from workbench.editing.defaults import single_layer

    layer = single_layer(model, layers if layers is not None else [default_layer(model)], "wise")
    start = time.perf_counter()
    previous = [e for e in model.prompt_edits if isinstance(e, WiseOverlay) and e.layer == layer]
    tau = previous[0].tau if previous else None
    fit = fit_side(model, layer, facts, tau=tau, tau_frac=tau_frac, n_prefixes=n_prefixes, n_contrast=n_contrast,
                   steps=steps, lr=lr,
                   stop_nll=stop_nll, previous=previous)
    mem = WiseOverlay(layer, fit["keys"], fit["values"], fit["tau"], acts=fit["acts"], active_list=model.prompt_edits)
    return commit_prompt_edit(
        model, "wise", [f.to_dict() for f in facts], mem,
        info={"layer": layer, "keys": len(mem.keys), "tau": fit["tau"], "nll": fit["nll"],
              "nll_before": fit["nll_before"], "steps": fit["steps"],
              "side_keys": sum(len(m.keys) for m in previous) + len(mem.keys)},
        seconds=time.perf_counter() - start, layers=[layer],
    )


@register_loader("wise")
def _load(saved: dict, model: Model | None = None) -> WiseOverlay:
    return WiseOverlay.from_dict(saved, model)
