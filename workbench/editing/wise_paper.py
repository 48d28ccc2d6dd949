"""WISE as published (Wang et al., NeurIPS 2024): a side copy of one FFN value matrix,
trained on random shards of its entries, shards merged with Ties, and a router per input.

What the paper and its authors' code (EasyEdit's ``models/wise``) specify, as built here:

* **Side memory.** W' starts as a copy of the value matrix W (``mlp.down_proj``) of one
  late layer (LLaMA-2-7B's layer 27 of 32, mapped to the same depth). The main W is never
  written.
* **Routing per input.** The activation score of an input is the mean over its positions of
  ``‖act(W'a) − act(Wa)‖`` (``act``: the model's FFN activation function, as the code applies
  it; the largest position's score for inputs over 100 positions, ``long_input``). The input reads W' when its
  score reaches ``act_ratio`` x the smallest score any edit of that memory reached in training
  (0.88 for LLaMA-2-7B), otherwise the unedited W, bitwise.
* **Training an edit.** SGD (lr 1.0, weight decay 1e-5) for up to 70 steps on W': the new
  object's cross-entropy over the edit prompt and its prefixed copies (ten sampled prefixes),
  plus hinge margins on the scores: the edit's above β = 20 and above a held-out text's
  by γ = 10, the held-out text's below α = 5. The held-out text (one per edit) plays the
  part of the paper's irrelevant input; it is drawn from the corpus the statistics use, never
  the texts perplexity is measured on. After each step W' is clamped to W ± 1.0.
  Stops early when the loss is below 0.02 and stopped changing.
* **Knowledge shards.** Each edit's gradient is masked to a random 20 % of W's entries; the
  mask is drawn anew every ``save_freq`` edits (500), when the shard is put aside as a
  memory of its own and W' starts again from W. Every ``merge_freq`` edits (1,000) the
  shards put aside since the last merge are merged into one memory with Ties (keep the 53 %
  largest entries of each shard's change, elect a sign per entry by their sum, average the
  changes that agree with it). An input reads the memory whose score is largest among those
  over their own thresholds (the authors' retrieval setting, their released default).

Where this differs from the paper's code, and why:

* Weight decay touches only the shard's entries (the code decays every entry of W', which
  makes each edit a dense change; here an edit's change stays on its shard).
* Scores average over the input's real tokens (padding is left out); the edit's training
  score is measured after its last step.
* Each edit is held as its change on its shard and the memories are summed from the edits
  in order, so reverting any edit gives back exactly the memory there was before it.
* Edits cannot be saved to a file (a shard's change is a megabyte per edit); a sequential
  run's checkpoint keeps them (:meth:`WisePaperEdit.to_state`).

Example:
    >>> h = wb.edit(model, fact, method="wise-paper")                # doctest: +SKIP
    >>> h.info["in_scope"], h.info["threshold"]                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from workbench.checks import Number, Whole
from workbench.core.activations import replay_below
from workbench.core.model import Model
from workbench.editing.handle import EditHandle, commit_prompt_edit
from workbench.editing.overlays import STATE_LOADERS, LayerOverlay
from workbench.editing.registry import register_method
from workbench.editing.wise import edit_rows
from workbench.errors import WorkbenchError
from workbench.facts import Fact

#: The published settings (EasyEdit ``hparams/WISE/llama-7b.yaml`` and the paper's appendix).
PAPER = dict(mask_ratio=0.2, lr=1.0, steps=70, norm_constraint=1.0, alpha=5.0, beta=20.0, gamma=10.0,
             act_ratio=0.88, save_freq=500, merge_freq=1000, density=0.53, weight_decay=1e-5, n_prefixes=10,
             long_input=100)
#: LLaMA-2-7B's edited layer, 27 of 32: the default layer sits at the same depth.
PAPER_LAYER, PAPER_DEPTH = 27, 32
#: Inputs longer than this are scored by their largest position, as the authors' code does
#: (the ``long_input`` setting; 0 scores every input by its mean).
LONG_INPUT = 100
#: The early stop of the authors' code: the loss below this and changed by less than 1e-4.
STOP_LOSS = 0.02


def paper_layer(model: Model) -> int:
    """LLaMA-2-7B's layer 27 of 32 at the same depth (15 of gemma-3-270m's 18).

    Example:
        >>> paper_layer(model)                       # doctest: +SKIP
        15
    """
    return min(model.n_layers - 1, round(PAPER_LAYER / PAPER_DEPTH * model.n_layers))


def activation_fn(model: Model):
    """The model's FFN activation function, by its config's name."""
    from transformers.activations import ACT2FN

    for cfg in (model.hf_model.config, getattr(model.hf_model.config, "text_config", None)):
        name = (getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", None)) if cfg else None
        if name:
            return ACT2FN[name]
    raise WorkbenchError(f"cannot tell {model.name}'s FFN activation function from its config")


def shard_mask(shape: tuple[int, int], shard: int, ratio: float, seed: int = 0) -> Tensor:
    """Shard ``shard``'s entries of a ``shape`` matrix: a fixed random ``ratio`` of them.

    Example:
        >>> m = shard_mask((4, 50), 0, 0.2)
        >>> torch.equal(m, shard_mask((4, 50), 0, 0.2)), 0.1 < float(m.float().mean()) < 0.3
        (True, True)
    """
    g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + shard)
    return torch.rand(shape, generator=g) < ratio


def ties_merge(deltas: Sequence[Tensor], weights: Sequence[float], density: float) -> Tensor:
    """Ties-Merging of changes ``deltas`` (as the authors' ``GTA('magnitude', 'sum', normalize=True)``):
    keep each change's ``density`` largest entries by magnitude, elect each entry's sign by the
    sum of the weighted kept changes (ties count as +), and average the weighted changes that agree
    with it (divided by the weights of those that agree).

    Example:
        >>> a, b = torch.tensor([1.0, 0.0, -2.0, 4.0]), torch.tensor([3.0, 5.0, 1.0, 0.0])
        >>> ties_merge([a, b], [0.5, 0.5], 1.0)
        tensor([2., 5., -2., 4.])
    """
    kept = []
    for d in deltas:
        k = int(density * d.numel())
        if density >= 1:
            kept.append(d.clone())
            continue
        if k <= 0:
            raise WorkbenchError(f"Ties density {density} keeps no entry of a {d.numel()}-entry change")
        out = torch.zeros_like(d)
        top = d.abs().reshape(-1).float().topk(k).indices
        out.view(-1)[top] = d.reshape(-1)[top]
        kept.append(out)
    stacked = torch.stack(kept)
    w = torch.tensor(list(weights), dtype=stacked.dtype).reshape(-1, *([1] * (stacked.dim() - 1)))
    weighted = stacked * w
    elected = (weighted.sum(0) >= 0).to(stacked.dtype) * 2 - 1
    agree = (weighted.sign() == elected).to(stacked.dtype)
    mixed = (weighted * agree).sum(0)
    divisor = (w * agree).sum(0)
    divisor[divisor == 0] = 1
    return mixed / divisor


@dataclass
class _Memory:
    """One memory the router chooses among: W' as a change of W, and its threshold."""

    delta: Tensor  # [d_model, d_mlp]
    threshold: float


class WisePaperEdit(LayerOverlay):
    """One edit's share of the WISE side memory at ``layer``: its change on its shard.

    Attributes:
        shard: which shard it trained (edits ``shard * save_freq`` to ``(shard + 1) * save_freq - 1``).
        values: ``[n]`` its change of W' on the shard's entries (in the mask's order).
        in_scope: its edit prompts' score after training (the memory's threshold is
            ``act_ratio`` x the smallest of its edits').
        settings: ``mask_ratio``, ``act_ratio``, ``save_freq``, ``merge_freq``, ``density``
            (the first edit's are the memory's).
    """

    kind = "wise-paper"

    def __init__(self, layer: int, shard: int, values: Tensor, in_scope: float, settings: dict, act,
                 *, active_list: list | None = None) -> None:
        super().__init__(layer, active_list)
        if not (math.isfinite(in_scope) and in_scope > 0):
            raise WorkbenchError(f"a WISE edit's training score must be a positive number, got {in_scope}")
        self.shard, self.in_scope, self.settings, self.act = int(shard), float(in_scope), dict(settings), act
        self.values = values.detach().float().cpu()
        self._mask_holder: dict = {}
        self._cache: tuple | None = None
        self._mask_hook = None
        self.mask_now: Tensor | None = None  # the attention mask of the forward pass under way

    def __repr__(self) -> str:
        return f"WisePaperEdit(layer={self.layer}, shard={self.shard}, in_scope={self.in_scope:.3g})"

    @staticmethod
    def module(model: Model, layer: int):
        return model.bridge.blocks[layer].mlp.out  # the value matrix: its input is the FFN keys

    # -- the memories, from the edits in order ---------------------------------------------
    def mask(self, shape: tuple[int, int], shard: int) -> Tensor:
        key = (shape, shard)
        if key not in self._mask_holder:
            self._mask_holder[key] = shard_mask(shape, shard, self.settings["mask_ratio"])
        return self._mask_holder[key]

    def memories(self, weight_shape: tuple[int, int], members: list | None = None) -> list[_Memory]:
        """The memories the router chooses among: merged groups of shards, shards put aside,
        and the shard being filled (oldest first), each summed from its edits."""
        members = self.members() if members is None else members
        ident = tuple(id(m) for m in members)
        if self._cache is not None and self._cache[0] == ident:
            return self._cache[1]
        s = members[0].settings if members else self.settings
        shards: dict[int, list[WisePaperEdit]] = {}
        for m in members:
            shards.setdefault(m.shard, []).append(m)
        per_merge = max(1, s["merge_freq"] // s["save_freq"])
        memories, pending = [], []
        for shard in sorted(shards):
            edits = shards[shard]
            delta = torch.zeros(weight_shape)
            where = self.mask(weight_shape, shard)
            for e in edits:
                delta[where] += e.values
            pending.append((delta, min(e.in_scope for e in edits), len(edits) >= s["save_freq"]))
            if len(pending) == per_merge and all(full for *_, full in pending):
                merged = ties_merge([d for d, *_ in pending], [1.0 / per_merge] * per_merge, s["density"])
                memories.append(_Memory(merged, s["act_ratio"] * min(t for _, t, _ in pending)))
                pending = []
        memories += [_Memory(d, s["act_ratio"] * t) for d, t, _ in pending]
        self._cache = (ident, memories)
        return memories

    # -- routing ------------------------------------------------------------------------------
    def scores(self, inputs: Tensor, base: Tensor, delta: Tensor, valid: Tensor | None) -> Tensor:
        """Each input's score for one memory: ``‖act(W'a) − act(Wa)‖`` over its positions."""
        side = base + inputs.float() @ delta.to(inputs.device).T
        dist = (self.act(side) - self.act(base)).norm(dim=-1)  # [batch, pos]
        if valid is None:
            valid = torch.ones_like(dist, dtype=torch.bool)
        counts = valid.sum(-1)
        mean = (dist * valid).sum(-1) / counts.clamp(min=1)
        long_input = self.settings.get("long_input", LONG_INPUT)
        if not long_input:
            return mean
        longest = dist.masked_fill(~valid, -math.inf).amax(-1)
        return torch.where(counts > long_input, longest, mean)

    def _valid(self, inputs: Tensor) -> Tensor | None:
        mask = self.mask_now
        if mask is None or inputs.dim() != 3 or mask.shape[0] != inputs.shape[0] or mask.shape[1] < inputs.shape[1]:
            return None
        return mask[:, -inputs.shape[1]:].to(inputs.device).bool()

    def respond(self, inputs: Tensor, output: Tensor, members: list) -> Tensor | None:
        if inputs.dim() != 3:
            return None
        weight_shape = (output.shape[-1], inputs.shape[-1])
        memories = self.memories(weight_shape, members)
        if not memories:
            return None
        base = output.detach().float()
        valid = self._valid(inputs)
        chosen = torch.full((inputs.shape[0],), -1, dtype=torch.long, device=inputs.device)
        # The router as the authors' code runs it: the shard being filled reads if its score
        # reaches its threshold; a memory put aside wins where its score is over its own
        # threshold and larger than the best so far.
        current = memories[-1]
        best = self.scores(inputs, base, current.delta, valid)
        chosen[best >= current.threshold] = len(memories) - 1
        for i, mem in enumerate(memories[:-1]):
            score = self.scores(inputs, base, mem.delta, valid)
            win = (score > best) & (score > mem.threshold)
            chosen[win], best = i, torch.where(win, score, best)
        if not bool((chosen >= 0).any()):
            return None  # every input reads the main memory: the layer's own output, bitwise
        out = output.clone()
        for i in chosen.unique().tolist():
            if i < 0:
                continue
            rows = chosen == i
            out[rows] = (base[rows] + inputs[rows].float() @ memories[i].delta.to(inputs.device).T).to(output.dtype)
        return out

    # -- a sequential run's checkpoint (tensors beside JSON; too large for an edit file) -------
    def to_state(self) -> tuple[dict, dict[str, Tensor]]:
        """(JSON-ready description, tensors): what :meth:`from_state` rebuilds the edit from."""
        return ({"kind": self.kind, "layer": self.layer, "shard": self.shard, "in_scope": self.in_scope,
                 "settings": self.settings}, {"values": self.values})

    @classmethod
    def from_state(cls, meta: dict, tensors: dict[str, Tensor], model: Model) -> WisePaperEdit:
        """Rebuild from :meth:`to_state`, joining the memory at its layer on ``model``."""
        try:
            layer = model.layer_index(int(meta["layer"]))
            edit = cls(layer, int(meta["shard"]), tensors["values"], float(meta["in_scope"]), dict(meta["settings"]),
                       activation_fn(model), active_list=model.prompt_edits)
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkbenchError(f"saved WISE edit is corrupt ({type(exc).__name__}: {exc})") from None
        first = next((e for e in model.prompt_edits if isinstance(e, cls) and e.layer == layer), None)
        if first is not None:
            edit._mask_holder = first._mask_holder
        return edit

    # -- the attention mask, so that padding is not scored -------------------------------------
    def attach(self, model: Model) -> None:
        super().attach(model)
        if self._mask_hook is None:
            def keep_mask(module, args, kwargs):
                self.mask_now = kwargs.get("attention_mask")

            self._mask_hook = model.hf_model.base_model.register_forward_pre_hook(keep_mask, with_kwargs=True)

    def detach(self) -> None:
        super().detach()
        if self._mask_hook is not None:
            self._mask_hook.remove()
            self._mask_hook = None
        self.mask_now = None


def irrelevant_text(model: Model, index: int, *, tokens: int = 32) -> list[int]:
    """The held-out input of the ``index``-th edit: a corpus text from the statistics split
    (never one perplexity is measured on), cut to ``tokens`` tokens."""
    from workbench.corpus import wiki_texts

    texts = wiki_texts("stats", limit=64)
    return model.encode(texts[index % len(texts)])[:tokens]


@dataclass
class _Batch:
    """An edit's training rows (edit prompts, then the held-out text) and where its object is."""

    ids: Tensor
    mask: Tensor
    n_edit: int
    rows: Tensor  # row of each object token
    positions: Tensor  # the position that predicts it
    tokens: Tensor
    weights: Tensor  # each edit row counts equally, whatever its object's length

    @property
    def valid(self) -> Tensor:
        return self.mask.bool()

    def per_row(self, dist: Tensor) -> Tensor:
        """Each row's mean score over its real tokens."""
        return (dist * self.valid).sum(-1) / self.valid.sum(-1)


def _batch(model: Model, facts: Sequence[Fact], index: int, n_prefixes: int) -> _Batch:
    from workbench.editing.optimize import context_prefixes
    from workbench.probing import _pad_batch, _pad_id

    prefixes = context_prefixes(model, n_prefixes) if n_prefixes else []
    rows = [r for f in facts for r in edit_rows(model, f, prefixes, whole_object=True)]
    ids, mask = _pad_batch([r[0] for r in rows] + [irrelevant_text(model, index)], _pad_id(model))
    dev = model.device
    return _Batch(
        ids.to(dev), mask.to(dev), len(rows),
        torch.tensor([i for i, r in enumerate(rows) for _ in r[1]], device=dev),
        torch.tensor([p for r in rows for p in r[1]], device=dev),
        torch.tensor([t for r in rows for t in r[2]], device=dev),
        torch.tensor([1.0 / len(r[2]) for r in rows for _ in r[2]], device=dev) / len(rows))


def train_edit(model: Model, layer: int, facts: Sequence[Fact], *, previous: list[WisePaperEdit], shard: int,
               index: int, settings: dict, act) -> dict:
    """One edit's change on its shard: SGD on W' (masked to the shard) against the cross-entropy
    and the routing margins (see the module docstring)."""
    s = settings
    module = WisePaperEdit.module(model, layer)
    W = module.weight.detach().float()
    shape = tuple(W.shape)
    where = (previous[0].mask(shape, shard) if previous else shard_mask(shape, shard, s["mask_ratio"])).to(W.device)
    start = torch.zeros(shape, device=W.device)  # the shard's W' - W so far, summed as the memory sums it
    for e in previous:
        if e.shard == shard:
            start[where] += e.values.to(W.device)
    batch = _batch(model, facts, index, s["n_prefixes"])
    change = torch.zeros(shape, device=W.device, requires_grad=True)
    got: dict = {}

    def hook(module, args, output):
        # While training every row reads W' (the code's editing mode), and its score is kept.
        base = output.float()
        side = base + args[0].float() @ (start + change).T
        got["dist"] = (act(side) - act(base)).norm(dim=-1)
        return side.to(output.dtype)

    # The edit trains on W' alone: the memory's own hook is off meanwhile.
    for m in previous:
        m.detach()
    try:
        with contextlib.ExitStack() as stack:
            # Only block `layer` and above change between steps: the blocks below are run once.
            stack.enter_context(replay_below(model, layer, batch.ids, batch.mask))
            stack.callback(module.register_forward_hook(hook).remove)
            fit = _sgd(model, batch, got, change, start, where, W, s)
            with torch.no_grad():
                model.hidden(batch.ids, batch.mask)
            per_row = batch.per_row(got["dist"])
    finally:
        for m in previous:
            m.attach(model)
    values = (start + change.detach())[where] - start[where]
    return dict(values=values.cpu(), in_scope=float(per_row[: batch.n_edit].mean()),
                out_scope=float(per_row[batch.n_edit:].mean()), **fit)


def _sgd(model: Model, batch: _Batch, got: dict, change: Tensor, start: Tensor, where: Tensor, W: Tensor,
         s: dict) -> dict:
    """SGD on the shard's entries of W' (:func:`train_edit`'s hook on): the loss of the module docstring."""
    from workbench.runtime.unembed import MixedUnembed

    opt = torch.optim.SGD([change], lr=s["lr"])
    last, steps, first_nll, nll_value = math.inf, 0, math.nan, math.nan
    # Unembedding Gemma's 262k tokens forward and backward was most of a step: the v* searches' split.
    unembed = MixedUnembed(model) if MixedUnembed.supported(model) else None
    with torch.enable_grad():
        for steps in range(1, s["steps"] + 1):
            hidden = model.hidden(batch.ids, batch.mask)[batch.rows, batch.positions]
            logp = (unembed(hidden, keep=batch.tokens) if unembed is not None
                    else model.logits_from_hidden(hidden).float().log_softmax(-1))
            nll = -(logp[torch.arange(len(batch.tokens)), batch.tokens] * batch.weights).sum()
            per_row = batch.per_row(got["dist"])
            inside, outside = per_row[: batch.n_edit], per_row[batch.n_edit:].mean()
            # The code averages each hinge over its positive terms only.
            margin = (_mean_positive(torch.relu(outside - inside + s["gamma"])) + torch.relu(outside - s["alpha"])
                      + _mean_positive(torch.relu(s["beta"] - inside)))
            loss = nll + margin
            value, nll_value = float(loss.detach()), float(nll.detach())
            if not math.isfinite(value):
                raise WorkbenchError(f"the WISE side-memory search produced NaN/inf (step {steps}); nothing changed")
            if steps == 1:
                first_nll = nll_value
            if abs(value - last) <= 1e-4 and value <= STOP_LOSS:
                break
            last = value
            opt.zero_grad()
            loss.backward()
            with torch.no_grad():
                change.grad *= where
                # Weight decay on the shard's entries of W' (the code's SGD decays all of W').
                change.grad += s["weight_decay"] * (W + start + change) * where
            opt.step()
            with torch.no_grad():
                total = (start + change).clamp(-s["norm_constraint"], s["norm_constraint"])
                change.copy_((total - start) * where)
    return dict(steps=steps, nll=nll_value, nll_before=first_nll)


def _mean_positive(x: Tensor) -> Tensor:
    positive = x[x > 0]
    return positive.mean() if positive.numel() else x.new_zeros(())


@register_method(
    "wise-paper", order=8, kind="overlay", layers=lambda model: [paper_layer(model)],
    holds="a side memory in shards with a router",
    summary="WISE as published: a side copy of one FFN value matrix, trained in random shards merged with "
            "Ties, a router per input",
    description="WISE with the authors' recipe: edits train random shards of a side copy of one late FFN, "
                "shards are merged with Ties, and each input reads the side memory only when its activations "
                "move enough there; the main weights stay.",
    limits={"mask_ratio": Number(0, 1, strict=True), "lr": Number(0, 100, strict=True), "steps": Whole(1, 10_000),
            "act_ratio": Number(0, 10, strict=True), "save_freq": Whole(1, 1_000_000),
            "merge_freq": Whole(1, 1_000_000), "density": Number(0, 1, strict=True), "n_prefixes": Whole(0, 20),
            "alpha": Number(0, 1e4), "beta": Number(0, 1e4), "gamma": Number(0, 1e4),
            "norm_constraint": Number(0, 1e4, strict=True), "long_input": Whole(0, 1_000_000)})
def wise_paper(model: Model, facts: list[Fact], *, layers=None, **settings) -> EditHandle:
    """Edit by training the facts into a shard of the side memory of one FFN value matrix.

    Args:
        model: a loaded Model (its weights are not touched).
        facts: facts with ``target_new`` (several: one training on all of them).
        layers: the one layer (default: :func:`paper_layer`).
        settings: any of :data:`PAPER` (the published values are the defaults). A memory's
            ``mask_ratio``, ``save_freq``, ``merge_freq``, ``density``, ``act_ratio`` and
            ``long_input`` are its first edit's. ``long_input=0`` scores every input by its mean
            (the authors' largest-position rule for long inputs sent held-out text to the side memory).

    Example:
        >>> h = wb.edit(model, fact, method="wise-paper")      # doctest: +SKIP
    """
    from workbench.editing.defaults import single_layer

    unknown = sorted(set(settings) - set(PAPER))
    if unknown:
        raise WorkbenchError(f"wise-paper has no setting {unknown[0]!r} (its settings: {', '.join(sorted(PAPER))})")
    layer = single_layer(model, layers if layers is not None else [paper_layer(model)], "wise-paper")
    start = time.perf_counter()
    previous = [e for e in model.prompt_edits if isinstance(e, WisePaperEdit) and e.layer == layer]
    s = {**PAPER, **settings}
    if previous:
        # The memory's structure is its first edit's: a later edit cannot change its shards.
        s.update({k: previous[0].settings.get(k, PAPER[k]) for k in ("mask_ratio", "save_freq", "merge_freq",
                                                                      "density", "act_ratio", "long_input")})
    if s["merge_freq"] % s["save_freq"]:
        raise WorkbenchError(f"merge_freq ({s['merge_freq']}) must be a multiple of save_freq ({s['save_freq']})")
    index = len(previous)
    shard = index // s["save_freq"]
    act = activation_fn(model)
    fit = train_edit(model, layer, facts, previous=previous, shard=shard, index=index, settings=s, act=act)
    edit = WisePaperEdit(layer, shard, fit["values"], fit["in_scope"], s, act, active_list=model.prompt_edits)
    if previous:
        edit._mask_holder = previous[0]._mask_holder  # one mask per shard, shared
    return commit_prompt_edit(
        model, "wise-paper", [f.to_dict() for f in facts], edit,
        info={"layer": layer, "shard": shard, "in_scope": fit["in_scope"], "out_scope": fit["out_scope"],
              "threshold": s["act_ratio"] * min([fit["in_scope"], *(e.in_scope for e in previous if e.shard == shard)]),
              "steps": fit["steps"], "nll": fit["nll"], "nll_before": fit["nll_before"], "edits_in_memory": index + 1},
        seconds=time.perf_counter() - start, layers=[layer],
    )


STATE_LOADERS[WisePaperEdit.kind] = WisePaperEdit.from_state
