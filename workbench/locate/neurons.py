"""Knowledge neurons (Dai et al. 2022): FFN keys whose activation carries a fact.

For a prompt and a target, the attribution of key ``i`` at layer ``l`` is the
integrated gradient of ``p(target's first token)`` at the last position with
respect to that key's coefficient ``m_i`` at the last position, scaling the
layer's coefficients there from 0 to their actual values::

    attr_i = m_i * sum_k w_k dp/dm_i (alpha_k * m),   alpha_k = u_k ** power,
    u_k = (k - 1/2) / steps,  w_k = power * u_k ** (power - 1) / steps

(the midpoint rule after substituting ``alpha = u ** power``). ``power=1`` is
Dai et al.'s uniform grid. Gemma needs more: its post-FFN RMS norm makes the
FFN's contribution nearly independent of a common scale ``alpha``, so
``p(alpha)`` is flat except for ``alpha`` below ~``sqrt(eps / mean(out^2))``
(~0.02 for Gemma 3 270M), where uniform steps land too few points. With
``power=3`` the first of 20 nodes is at 1.6e-5 and the jump is resolved; by
default families with a post-FFN norm get ``power=3``, others ``1``. By the
completeness axiom the attributions of one layer sum to
``p(actual) - p(layer's last-position coefficients zeroed)``; results record
both sides so a user can check it. Layers are attributed one at a time
(the other layers run normally), the steps of a layer go in one batch, and
only the blocks from that layer up run, at the last position (the earlier
positions cannot see the coefficients there).

Neurons with ``attr >= threshold * max attr`` of a prompt are kept for that
prompt; a neuron is reported when kept for at least ``share`` of the prompts.
The report also measures the effect of suppressing (coefficient 0) and
amplifying (x2) the reported neurons at the last position on ``p(target)``.

Model parameters have ``requires_grad=False``; gradients are taken with respect
to the hooked activation tensor, so no weight ever accumulates a gradient.

Example:
    >>> r = knowledge_neurons(model, fact, "Paris", layers=range(10, 18))
    >>> r.effect.suppressed < r.effect.before
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.core.activations import hooked
from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.locate.blocks import BlockRunner
from workbench.locate.ffn import key_coefficients
from workbench.locate.interventions import amplify, suppress
from workbench.locate.lens import check_prompt, first_token_id
from workbench.core.model import Model
from workbench.runtime.progress import CancelToken, progress
from workbench.results import Result

#: The most integration steps: they run as one batch (Dai et al. use 20); the KN editor's
#: ``steps`` stops at the same number.
MAX_STEPS = 1000


@dataclass
class LayerAttribution(Result):
    """Integrated gradients of one prompt at one layer.

    ``attributions`` is ``[d_mlp]``; completeness says ``attributions.sum()``
    ≈ ``prob_full - prob_baseline``.
    """

    layer: int
    attributions: Float[Tensor, "d_mlp"]
    prob_full: float
    prob_baseline: float

    @property
    def completeness_error(self) -> float:
        return abs(float(self.attributions.sum()) - (self.prob_full - self.prob_baseline))


def next_token_prob(model: Model, tokens: Tensor, token_id: int) -> Tensor:
    """``p(token_id)`` after the last position of each row (all rows the same length)."""
    hidden = model.hidden(tokens)[:, -1]
    return model.logits_from_hidden(hidden).float().softmax(-1)[:, token_id]


def integrated_gradients(
    model: Model, prompt: str, target: str, *, layer: int, steps: int = 20,
    power: float | None = None, coefficients: Tensor | None = None,
    runner: BlockRunner | None = None, full_forward: bool = False,
) -> LayerAttribution:
    """Integrated gradients of ``p(target first token)`` w.r.t. layer ``layer``'s key coefficients.

    Only the last position's state from block ``layer`` up depends on the
    coefficients being scaled (attention is causal, the blocks below do not see
    them), so by default each step runs just that: blocks ``layer..`` at the last
    position, the earlier positions' keys and values taken from one clean run
    (a :class:`~workbench.locate.blocks.BlockRunner`). ``full_forward=True`` runs
    the whole prompt through every block for every step instead — the obvious
    implementation, kept as the reference the fast one is tested against.

    Args:
        model: a loaded model.
        prompt: the prompt; attributions are at its last token.
        target: the answer; its first token is scored.
        layer: the FFN layer.
        steps: integration steps (all in one batch, plus two rows for alpha 0 and 1).
        power: the grid ``alpha = u ** power`` (see module doc); None picks 3 for
            families with a post-FFN norm, else 1 (Dai et al.'s uniform grid).
        coefficients: the actual last-position coefficients, if already computed.
        runner: a ``BlockRunner`` of this prompt, to share between layers (made if None).
        full_forward: use the reference implementation.

    Example:
        >>> a = integrated_gradients(model, "The capital of France is", "Paris", layer=12)
        >>> a.completeness_error < 0.05 * abs(a.prob_full - a.prob_baseline)
        True
    """
    layer = model.layer_index(layer)
    if not isinstance(steps, int) or steps < 1:
        raise WorkbenchError(f"steps must be a positive integer, got {steps!r}")
    if steps > MAX_STEPS:  # all steps are one batch: 10**9 asked for 8 GB
        raise WorkbenchError(f"steps must be at most {MAX_STEPS} (they run as one batch), got {steps!r}")
    tokens = check_prompt(model, prompt)
    token_id = first_token_id(model, prompt, target)
    if coefficients is None:
        coefficients = key_coefficients(model, tokens, [layer])[layer][-1]
    if power is None:
        power = 3.0 if model.roles.ffn_post_norm else 1.0
    if not power >= 1:
        raise WorkbenchError(f"power must be >= 1, got {power!r}")
    u = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    weights = (power * u ** (power - 1) / steps).float()
    alphas = torch.cat([u ** power, torch.tensor([0.0, 1.0], dtype=torch.float64)])
    alphas = alphas.to(coefficients.device, coefficients.dtype)
    # The leaf we differentiate against: one scaled copy of the coefficients per row.
    scaled = (alphas[:, None] * coefficients[None]).detach().requires_grad_(True)

    def replace_last(acts: Tensor, hook) -> Tensor:
        acts = acts.clone()
        acts[:, -1] = scaled
        return acts

    hooks = [(model.roles.hook("ffn_keys", layer), replace_last)]
    with torch.enable_grad():
        if full_forward:
            with hooked(model, hooks):
                probs = next_token_prob(model, tokens.expand(len(alphas), -1), token_id)
        else:
            if runner is None:
                runner = BlockRunner(model, tokens)
            last = tokens.shape[1] - 1
            x = runner.resid[layer][:, last:].expand(len(alphas), -1, -1).contiguous()
            hidden = runner.run(layer, x, hooks, first=last, prefix=runner.clean.kv if last else None, grad=True)
            probs = model.logits_from_hidden(hidden).float().softmax(-1)[:, token_id]
        (grad,) = torch.autograd.grad(probs.sum(), scaled)
    weights = weights.to(grad.device)
    attributions = coefficients.float() * (weights[:, None] * grad[:steps].float()).sum(0)
    return LayerAttribution(layer=layer, attributions=attributions.detach().cpu(),
                            prob_full=float(probs[-1].detach()), prob_baseline=float(probs[-2].detach()))


@dataclass
class Neuron(Result):
    """A knowledge neuron: ``attribution`` is its mean over prompts, ``share`` the
    fraction of prompts for which it passed the threshold."""

    layer: int
    key: int
    attribution: float
    share: float


@dataclass
class PromptNeurons(Result):
    prompt: str
    prob: float
    kept: list[tuple[int, int]]
    max_attribution: float
    #: per attributed layer: (sum of attributions, p_full - p_baseline); equal by completeness.
    completeness: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Effect(Result):
    """Mean ``p(target first token)`` over the prompts, before and with the neurons changed."""
    before: float
    suppressed: float
    amplified: float
    per_prompt: list[tuple[float, float, float]] = field(default_factory=list)


@dataclass
class NeuronReport(Result):
    """What :func:`knowledge_neurons` returns.

    Attributes:
        neurons: the shared knowledge neurons, by mean attribution.
        top: the ``top_n`` largest mean attributions over all attributed keys
            (shared or not), for figures.
        layer_totals: per attributed layer, the mean (over prompts) sum of attributions.
        effect: p(target) before / suppressed / amplified, or None without neurons.
    """

    model: str
    target: str
    target_token: str
    layers: list[int]
    steps: int
    threshold: float
    share: float
    prompts: list[PromptNeurons]
    neurons: list[Neuron]
    top: list[Neuron]
    layer_totals: list[float]
    effect: Effect | None

    def pairs(self) -> list[tuple[int, int]]:
        """The neurons as ``(layer, key)`` pairs (what :func:`~workbench.locate.interventions.suppress` takes)."""
        return [(n.layer, n.key) for n in self.neurons]

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame([n.to_dict() for n in self.neurons], columns=["layer", "key", "attribution", "share"])


def _prompts(fact_or_prompts, target: str | None) -> tuple[list[str], str]:
    if isinstance(fact_or_prompts, Fact):
        prompts = [fact_or_prompts.text, *fact_or_prompts.paraphrase_prompts]
        target = target if target is not None else fact_or_prompts.target_true
    elif isinstance(fact_or_prompts, str):
        prompts = [fact_or_prompts]
    else:
        prompts = list(fact_or_prompts)
    if not prompts:
        raise WorkbenchError("no prompts to attribute")
    if target is None:
        raise WorkbenchError("give a target (the answer whose neurons to find)")
    return prompts, target


def measure_effect(model: Model, prompts: Sequence[str], target: str,
                   neurons: Sequence[tuple[int, int]], *, factor: float = 2.0) -> Effect:
    """Mean ``p(target first token)`` before, with ``neurons`` suppressed, and amplified
    by ``factor``, changing their coefficients at each prompt's last position."""
    rows = []
    with torch.no_grad():
        for prompt in prompts:
            tokens = check_prompt(model, prompt)
            tid = first_token_id(model, prompt, target)
            before = float(next_token_prob(model, tokens, tid)[0])
            with suppress(model, neurons, position=-1):
                low = float(next_token_prob(model, tokens, tid)[0])
            with amplify(model, neurons, factor=factor, position=-1):
                high = float(next_token_prob(model, tokens, tid)[0])
            rows.append((before, low, high))
    mean = [sum(r[i] for r in rows) / len(rows) for i in range(3)]
    return Effect(before=mean[0], suppressed=mean[1], amplified=mean[2], per_prompt=rows)


def knowledge_neurons(
    model: Model,
    fact_or_prompts,
    target: str | None = None,
    *,
    steps: int = 20,
    power: float | None = None,
    threshold: float = 0.2,
    share: float = 0.7,
    layers: Iterable[int] | None = None,
    top_n: int = 50,
    measure: bool = True,
    cancel: CancelToken | None = None,
) -> NeuronReport:
    """Find the FFN keys that carry ``target`` after the given prompts (Dai et al. 2022).

    Args:
        model: a loaded model.
        fact_or_prompts: a :class:`~workbench.facts.Fact` (its prompt and
            paraphrases; target defaults to its true object), a prompt, or prompts.
        target: the answer (its first token is attributed).
        steps: integration steps per layer.
        power: integration grid, see :func:`integrated_gradients`.
        threshold: keep keys with attribution >= threshold x the prompt's max.
        share: report keys kept for at least this fraction of the prompts.
        layers: layers to attribute (default all). Cost per prompt: one clean run, then
            per layer one batched forward and backward pass of the blocks from that
            layer up, at the last position only.
        top_n: how many of the largest mean attributions to list in ``top``.
        measure: also measure suppressing / amplifying the neurons.
        cancel: a token the UI can trip to stop between layers.

    Raises:
        WorkbenchError: a target that tokenises to nothing, a bad layer, no prompts.

    Example:
        >>> r = knowledge_neurons(model, ["The capital of France is", "France's capital is"], "Paris")
        >>> r.effect.suppressed < r.effect.before
        True
    """
    if isinstance(steps, int) and steps > MAX_STEPS:  # refused before the first layer's work
        raise WorkbenchError(f"steps must be at most {MAX_STEPS} (they run as one batch), got {steps!r}")
    prompts, target = _prompts(fact_or_prompts, target)
    layer_list = list(range(model.n_layers)) if layers is None else [model.layer_index(l) for l in layers]
    if not layer_list:
        raise WorkbenchError("no layers to attribute")
    if not 0 < threshold <= 1 or not 0 < share <= 1:
        raise WorkbenchError("threshold and share must be in (0, 1]")
    token_id = first_token_id(model, prompts[0], target)
    per_prompt, all_attr = [], []
    work = [(p, l) for p in prompts for l in layer_list]
    current: dict[str, dict[int, Tensor]] = {}
    runner: BlockRunner | None = None
    layer_results: dict[str, list[LayerAttribution]] = {p: [] for p in prompts}
    for prompt, layer in progress(work, desc="knowledge neurons", total=len(work), cancel=cancel):
        if prompt not in current:
            tokens = check_prompt(model, prompt)
            current = {prompt: {l: c[-1] for l, c in key_coefficients(model, tokens, layer_list).items()}}
            runner = BlockRunner(model, tokens)  # shared by this prompt's layers
        layer_results[prompt].append(
            integrated_gradients(model, prompt, target, layer=layer, steps=steps, power=power,
                                 coefficients=current[prompt][layer], runner=runner)
        )
    for prompt in prompts:
        results = layer_results[prompt]
        attr = torch.stack([r.attributions for r in results])  # [layers, d_mlp]
        all_attr.append(attr)
        top = float(attr.max())
        kept = (attr >= threshold * top).nonzero().tolist() if top > 0 else []
        per_prompt.append(PromptNeurons(
            prompt=prompt, prob=results[0].prob_full, max_attribution=top,
            kept=[(layer_list[i], k) for i, k in kept],
            completeness=[(float(r.attributions.sum()), r.prob_full - r.prob_baseline) for r in results],
        ))
    stacked = torch.stack(all_attr)  # [prompts, layers, d_mlp]
    mean_attr = stacked.mean(0)
    counts: dict[tuple[int, int], int] = {}
    for p in per_prompt:
        for pair in p.kept:
            counts[pair] = counts.get(pair, 0) + 1
    # A tiny epsilon so share=0.7 of 10 prompts means 7, not 8, despite float rounding.
    neurons = [
        Neuron(layer=l, key=k, attribution=float(mean_attr[layer_list.index(l), k]), share=c / len(prompts))
        for (l, k), c in counts.items() if c / len(prompts) >= share - 1e-9
    ]
    neurons.sort(key=lambda n: -n.attribution)
    best, where = mean_attr.flatten().topk(min(top_n, mean_attr.numel()))
    top_list = [
        Neuron(layer=layer_list[i // model.d_mlp], key=i % model.d_mlp, attribution=float(v),
               share=counts.get((layer_list[i // model.d_mlp], i % model.d_mlp), 0) / len(prompts))
        for v, i in zip(best.tolist(), where.tolist())
    ]
    effect = None
    if measure and neurons:
        effect = measure_effect(model, prompts, target, [(n.layer, n.key) for n in neurons])
    return NeuronReport(
        model=model.name, target=target, target_token=model.tokenizer.decode([token_id]),
        layers=layer_list, steps=steps, threshold=threshold, share=share, prompts=per_prompt,
        neurons=neurons, top=top_list, layer_totals=[float(x) for x in stacked.sum(-1).mean(0)],
        effect=effect,
    )
