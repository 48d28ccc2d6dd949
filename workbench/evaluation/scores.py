"""Score what a model says about one fact: CounterFact metrics and EasyEdit accuracy.

Two families of numbers, kept apart on purpose (they are not comparable):

*CounterFact* (Meng et al. 2022). A target's probability is the mean over its
tokens of log p (``exp`` of it, as in :func:`~workbench.probing.probe`); the
tests compare ``p_new`` and ``p_true``:

- efficacy: on the edit prompt, ``p_new > p_true`` (1 or 0 per fact);
- paraphrase: the fraction of paraphrase prompts with ``p_new > p_true``;
- neighbourhood: the fraction of neighbour prompts (other subjects) with
  ``p_true > p_new`` -- the edit should leave them alone;
- magnitudes: the mean ``p_new - p_true`` (efficacy, paraphrase) and
  ``p_true - p_new`` (neighbourhood).

*Implication* (ours, after RippleEdits/MQuAKE). An implication prompt comes
with its own target (a consequence of the *new* fact); it succeeds when the
model's top-1 next token is the target's first token -- the same greedy
criterion :func:`~workbench.facts.filter_known` uses for "the model knows".
``implication_prob`` is the mean target probability, for before/after deltas.
Prompts that name their ``kind`` are also counted by kind
(``implication_multi_hop`` and the others; a relation-specificity prompt's target
is the subject's unedited answer, so there success means "did not move").

*EasyEdit* (Wang et al. 2023), teacher-forced token accuracy, fields prefixed
``easyedit_``: the fraction of target tokens that are the argmax given the
prompt and the earlier target tokens (``rewrite`` on the edit prompt,
``rephrase`` on paraphrases); ``locality`` is the fraction of the neighbour
prompts' argmax tokens (teacher-forced on the true object) that the edit left
unchanged, so it needs the unedited model's scores as ``reference``.

*The critics' measures* (fields with a ``gen_`` prefix, ``neighborhood_plus``,
``nkl``, ``letter_``; chosen with ``metrics``, see :mod:`~workbench.evaluation.generated`):
greedy generated answers judged new / true / neither (Yang et al. 2025), the
fact asked as a question, the neighbour prompts with the edit statement before
them (CounterFact+, Hoelscher-Obermaier et al. 2023) and the letter test of
sampled free text.

Example:
    >>> before = score_fact(model, fact)
    >>> h = wb.edit(model, fact, method="in-context")
    >>> after = score_fact(model, fact, reference=before)
    >>> after.efficacy, after.easyedit_locality_acc   # doctest: +SKIP
    (1.0, 0.9)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from workbench.errors import WorkbenchError
from workbench.evaluation import generated
from workbench.evaluation.intervals import mean_of
from workbench.facts import IMPLICATION_KINDS, Fact
from workbench.probing import run_sequences, target_ids
from workbench.results import Result

#: Tokens of each neighbour prompt's unedited next-token distribution kept for NKL
#: (the rest is one bucket; see :func:`bucket_kl`).
NKL_TOP = 8192


@dataclass
class PromptScore(Result):
    """One prompt of a fact, scored.

    Attributes:
        kind: ``"rewrite"``, ``"paraphrase"``, ``"neighborhood"``, ``"neighborhood_plus"``
            (a neighbour prompt after the edit statement) or ``"implication"``.
        prompt: the prompt as written in the dataset (before any in-context rewrite).
        p_new: probability of the new object (implication: of its own target).
        p_true: probability of the true object (None for implications).
        success: the CounterFact test of this kind passed.
        token_acc: EasyEdit teacher-forced accuracy of the target this kind is
            about (new object for rewrite/paraphrase, true object for neighbours).
    """

    kind: str
    prompt: str
    p_new: float
    p_true: float | None
    success: bool
    token_acc: float | None = None


@dataclass
class FactScores(Result):
    """All scores of one fact at one moment (before or after an edit).

    Rates are fractions in [0, 1]; None when the fact has no prompts of that kind.
    """

    efficacy: float
    efficacy_magnitude: float
    paraphrase: float | None
    paraphrase_magnitude: float | None
    neighborhood: float | None
    neighborhood_magnitude: float | None
    implication: float | None
    implication_prob: float | None
    easyedit_rewrite_acc: float
    easyedit_rephrase_acc: float | None
    easyedit_locality_acc: float | None
    prompts: list[PromptScore] = field(default_factory=list, repr=False)
    #: argmax token ids on each neighbour prompt, teacher-forced on the true object
    #: (what EasyEdit's locality compares before and after).
    neighbor_argmax: list[list[int]] = field(default_factory=list, repr=False)
    #: CounterFact+ (metric ``plus``): neighbour prompts after the edit statement keep
    #: the true object (teacher-forced), and the mean KL(unedited || edited) of the
    #: next-token distribution after each plain neighbour prompt (needs ``reference``).
    neighborhood_plus: float | None = None
    nkl: float | None = None
    #: Generated answers (metrics ``generation``, ``question``, ``plus``): the share of
    #: prompts whose greedy answer names the object the test wants (new object;
    #: true object for neighbours), and the share naming neither object.
    gen_efficacy: float | None = None
    gen_efficacy_neither: float | None = None
    gen_paraphrase: float | None = None
    gen_paraphrase_neither: float | None = None
    gen_neighborhood: float | None = None
    gen_neighborhood_neither: float | None = None
    gen_question: float | None = None
    gen_question_neither: float | None = None
    gen_neighborhood_plus: float | None = None
    gen_neighborhood_plus_neither: float | None = None
    #: The letter test (metric ``letter``): shares of sampled continuations of indirect
    #: prompts that mention the new object only, the true object only, both, neither.
    letter_new: float | None = None
    letter_true: float | None = None
    letter_both: float | None = None
    letter_neither: float | None = None
    #: The related-entity letter (metric ``related``): shares of sampled letters about the new
    #: object, and about the true one, that name the subject.
    related_new: float | None = None
    related_true: float | None = None
    #: The implication rate of each kind the fact's implication prompts name
    #: (:data:`~workbench.facts.IMPLICATION_KINDS`; None where it has none of that kind).
    #: ``implication_multi_hop`` is the multi-hop accuracy.
    implication_logical_generalisation: float | None = None
    implication_compositionality: float | None = None
    implication_multi_hop: float | None = None
    implication_relation_specificity: float | None = None
    #: What was generated, to read: ``{kind, prompt, text, verdict}`` per prompt.
    generations: list[dict] = field(default_factory=list, repr=False)
    letters: list[dict] = field(default_factory=list, repr=False)
    related_letters: list[dict] = field(default_factory=list, repr=False)
    #: The unedited model's top tokens after each neighbour prompt (ids, log-probs), for NKL.
    neighbor_next: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list, repr=False)

    def metrics(self) -> dict[str, float | None]:
        """The headline numbers and the generations (no per-prompt probabilities)."""
        from workbench.results import jsonable

        hidden = ("prompts", "neighbor_argmax", "neighbor_next")
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in hidden}


def score_fact(model: Model, fact: Fact, *, reference: FactScores | None = None, batch_size: int = 16,
               metrics: Sequence[str] = generated.DEFAULT_METRICS, max_new_tokens: int = generated.ANSWER_TOKENS,
               ) -> FactScores:
    """Score ``fact`` on ``model`` as it is now (with any edits applied).

    All of the fact's (prompt, target) pairs go through one batched pass of
    :func:`~workbench.probing.run_sequences`, the same computation as
    :func:`~workbench.probing.probe` (prompts pass through ``model.contextualize``,
    so in-context and retrieval edits are scored like weight edits).

    Args:
        model: a loaded :class:`~workbench.core.model.Model`.
        fact: a fact with both ``target_true`` and ``target_new``.
        reference: the same fact's scores on the unedited model; needed for
            EasyEdit locality and NKL (None otherwise).
        batch_size: sequences per forward pass.
        metrics: which measures (:data:`~workbench.evaluation.generated.METRICS`);
            ``teacher`` is always measured.
        max_new_tokens: tokens generated per answer (the judge reads the first sentence).

    Returns:
        :class:`FactScores`.

    Example:
        >>> s = score_fact(model, wb.Fact("Eiffel Tower", "The {} is in", "Paris", "Rome"))
        >>> s.efficacy   # the unedited model prefers Paris  # doctest: +SKIP
        0.0
    """
    return score_facts(model, [fact], references=[reference], batch_size=batch_size, metrics=metrics,
                       max_new_tokens=max_new_tokens)[0]


def score_facts(
    model: Model, facts: Sequence[Fact], *, references: Sequence[FactScores | None] | None = None, batch_size: int = 32,
    metrics: Sequence[str] = generated.DEFAULT_METRICS, max_new_tokens: int = generated.ANSWER_TOKENS,
) -> list[FactScores]:
    """:func:`score_fact` for many facts, their sequences batched together.

    The same numbers as one :func:`score_fact` call per fact (to float rounding:
    padding never reaches a sequence's own positions). Faster: a forward pass of a
    few dozen short sequences on a CPU costs little more than one of six, because
    reading the weights, not the arithmetic, is most of it.

    Example:
        >>> befores = score_facts(model, facts[:8])      # doctest: +SKIP
    """
    metrics = generated.check_metrics(metrics)
    facts = list(facts)
    references = list(references) if references is not None else [None] * len(facts)
    if len(references) != len(facts):
        raise WorkbenchError(f"{len(references)} reference scores for {len(facts)} facts")
    plus = "plus" in metrics
    plans = [_plan(model, f, plus=plus) for f in facts]
    sequences = [seq for plan in plans for seq in plan.sequences]
    positions = [pos for plan in plans for pos in plan.positions]
    owners = [(fi, k) for fi, plan in enumerate(plans) for k in range(len(plan.sequences))]

    def keep(i: int, logp: torch.Tensor) -> _Scored:
        fi, k = owners[i]
        return _reduce(plans[fi], k, logp, references[fi], plus=plus)

    kept = run_sequences(model, sequences, positions, batch_size=batch_size, reduce=keep)
    out, at = [], 0
    for fact, plan, reference in zip(facts, plans, references):
        n = len(plan.sequences)
        out.append(_assemble(fact, plan, kept[at : at + n], reference, plus=plus))
        at += n
    # The generated measures: every fact's prompts in shared batches, then judged.
    for scores, fields in zip(out, generated.measure(model, facts, metrics, max_new_tokens=max_new_tokens)):
        for name, value in fields.items():
            setattr(scores, name, value)
    return out


@dataclass
class _Plan:
    """One fact's sequences to score: (kind, index, prompt, which target) per sequence."""

    groups: list[tuple[str, list[str]]]
    items: list[tuple[str, int, str, str]]
    sequences: list[list[int]]
    positions: list[list[int]]
    targets: list[list[int]]


def _plan(model: Model, fact: Fact, *, plus: bool = False) -> _Plan:
    if fact.target_true is None or fact.target_new is None:
        raise WorkbenchError(f"fact about {fact.subject!r} needs both target_true and target_new to be scored")
    items: list[tuple[str, int, str, str]] = []
    groups = [("rewrite", [fact.text]), ("paraphrase", list(fact.paraphrase_prompts)),
              ("neighborhood", list(fact.neighborhood_prompts))]
    if plus:
        groups.append(("neighborhood_plus", generated.plus_prompts(fact)))
    for kind, prompts in groups:
        for j, p in enumerate(prompts):
            items.append((kind, j, p, "new"))
            items.append((kind, j, p, "true"))
    for j, imp in enumerate(fact.implication_prompts):
        items.append(("implication", j, imp.prompt, "implication"))

    sequences, positions, tids_all = [], [], []
    prompt_ids: dict[str, list[int]] = {}
    for kind, j, prompt, which in items:
        if prompt not in prompt_ids:
            prompt_ids[prompt] = model.tokens(model.contextualize(prompt))[0].tolist()
        ids = prompt_ids[prompt]
        target = {"new": fact.target_new, "true": fact.target_true}.get(which)
        if which == "implication":
            target = fact.implication_prompts[j].target
        tids = target_ids(model, prompt, target)
        sequences.append(ids + tids[:-1])
        positions.append(list(range(len(ids) - 1, len(ids) - 1 + len(tids))))
        tids_all.append(tids)
    return _Plan(groups, items, sequences, positions, tids_all)


@dataclass
class _Scored:
    """What one planned sequence's log-probs are kept as (not its vocabulary rows)."""

    prob: float  # mean per-token probability of the target (CounterFact)
    argmax: list[int]  # the predicted token at each target position (EasyEdit, implication top-1)
    tids: list[int]
    next_top: tuple | None = None  # a neighbour's next-token top NKL_TOP (ids, log-probs)
    nkl: float | None = None  # a neighbour's bucketed KL from the reference


def _reduce(plan: _Plan, k: int, logp: torch.Tensor, reference: FactScores | None, *, plus: bool) -> _Scored:
    """Sequence ``k`` of ``plan`` reduced to its scores while its log-prob rows are at hand."""
    kind, j, _, which = plan.items[k]
    tids = plan.targets[k]
    token_logps = logp[torch.arange(len(tids)), torch.tensor(tids)]
    kept = _Scored(float(token_logps.mean().exp()), logp.argmax(-1).tolist(), tids)
    if plus and kind == "neighborhood" and which == "true":
        top = logp[0].topk(min(NKL_TOP, logp.shape[-1]))
        kept.next_top = (top.indices.to(torch.int32), top.values.float())
        if reference is not None and j < len(reference.neighbor_next):
            kept.nkl = bucket_kl(reference.neighbor_next[j], logp[0])
    return kept


def _assemble(fact: Fact, plan: _Plan, kept: list[_Scored], reference: FactScores | None, *,
              plus: bool = False) -> FactScores:
    """The fact's scores from what was kept of its planned sequences."""
    groups = plan.groups
    scored: dict[tuple[str, int, str], tuple[float, list[int], list[int]]] = {}
    next_after: dict[int, _Scored] = {}  # neighbour j -> its next-token top and NKL
    for (kind, j, _, which), seq in zip(plan.items, kept):
        scored[(kind, j, which)] = (seq.prob, seq.argmax, seq.tids)
        if kind == "neighborhood" and which == "true":
            next_after[j] = seq

    def acc(key) -> float:
        _, argmax, tids = scored[key]
        return sum(int(a == t) for a, t in zip(argmax, tids)) / len(tids)

    prompt_scores: list[PromptScore] = []
    per_kind: dict[str, list[PromptScore]] = {"rewrite": [], "paraphrase": [], "neighborhood": [],
                                              "neighborhood_plus": [], "implication": []}
    neighbor_argmax: list[list[int]] = []
    for kind, prompts in groups:
        for j, p in enumerate(prompts):
            p_new, p_true = scored[(kind, j, "new")][0], scored[(kind, j, "true")][0]
            if kind == "neighborhood":
                success, token_acc = p_true > p_new, acc((kind, j, "true"))
                neighbor_argmax.append(scored[(kind, j, "true")][1])
            elif kind == "neighborhood_plus":
                success, token_acc = p_true > p_new, acc((kind, j, "true"))
            else:
                success, token_acc = p_new > p_true, acc((kind, j, "new"))
            ps = PromptScore(kind, p, p_new, p_true, bool(success), token_acc)
            per_kind[kind].append(ps)
            prompt_scores.append(ps)
    for j, imp in enumerate(fact.implication_prompts):
        prob, argmax, tids = scored[("implication", j, "implication")]
        ps = PromptScore("implication", imp.prompt, prob, None, argmax[0] == tids[0], acc(("implication", j, "implication")))
        per_kind["implication"].append(ps)
        prompt_scores.append(ps)

    rw = per_kind["rewrite"][0]
    para, neigh, impl = per_kind["paraphrase"], per_kind["neighborhood"], per_kind["implication"]
    by_kind: dict[str, list[float]] = {k: [] for k in IMPLICATION_KINDS}
    for imp, ps in zip(fact.implication_prompts, impl):
        if imp.kind in by_kind:
            by_kind[imp.kind].append(float(ps.success))
    locality = None
    if reference is not None and neigh:
        if len(reference.neighbor_argmax) != len(neighbor_argmax):
            raise WorkbenchError("the reference scores are of another fact (neighbour prompts differ)")
        # Per prompt: the fraction of its predicted tokens the edit left unchanged.
        locality = mean_of([
            sum(int(a == b) for a, b in zip(before, after)) / len(after)
            for before, after in zip(reference.neighbor_argmax, neighbor_argmax)
        ])
    neighbor_next = [next_after[j].next_top for j in range(len(neigh) if plus else 0)]
    nkl = None
    if plus and reference is not None and reference.neighbor_next and neigh:
        if len(reference.neighbor_next) != len(neigh):
            raise WorkbenchError("the reference scores are of another fact (neighbour prompts differ)")
        nkl = mean_of([next_after[j].nkl for j in range(len(reference.neighbor_next))])
    return FactScores(
        efficacy=float(rw.success),
        efficacy_magnitude=rw.p_new - rw.p_true,
        paraphrase=mean_of([float(s.success) for s in para]),
        paraphrase_magnitude=mean_of([s.p_new - s.p_true for s in para]),
        neighborhood=mean_of([float(s.success) for s in neigh]),
        neighborhood_magnitude=mean_of([s.p_true - s.p_new for s in neigh]),
        implication=mean_of([float(s.success) for s in impl]),
        implication_prob=mean_of([s.p_new for s in impl]),
        easyedit_rewrite_acc=rw.token_acc,
        easyedit_rephrase_acc=mean_of([s.token_acc for s in para]),
        easyedit_locality_acc=locality,
        prompts=prompt_scores,
        neighbor_argmax=neighbor_argmax,
        neighborhood_plus=mean_of([float(s.success) for s in per_kind["neighborhood_plus"]]) if plus else None,
        nkl=nkl,
        neighbor_next=neighbor_next,
        **{f"implication_{k}": mean_of(v) for k, v in by_kind.items()},
    )


def bucket_kl(reference: tuple, logp: torch.Tensor) -> float:
    """KL(P || Q) over P's kept top tokens plus one bucket for all the others.

    ``reference`` is the unedited distribution P as (token ids, log-probs) of its
    :data:`NKL_TOP` most likely tokens; ``logp`` the edited model's full log-softmax Q.
    Merging tokens into a bucket can only lower a KL divergence, so this is a lower
    bound on the full KL, and 0 exactly when the two distributions are equal. A test
    measures the gap on the default model after a ROME edit.

    Example:
        >>> logp = torch.tensor([0.5, 0.3, 0.2]).log()
        >>> bucket_kl(([0, 1], logp[:2].tolist()), logp)
        0.0
    """
    ids = torch.as_tensor(reference[0]).long()
    p_log = torch.as_tensor(reference[1]).double()
    q_all = logp.double()
    q_log = q_all[ids]
    p = p_log.exp()
    kl = float((p * (p_log - q_log)).sum())
    # The bucket: P's rest is what its kept tokens leave; Q's is summed directly (not 1 - sum,
    # which is rounding noise when nearly all mass is kept).
    p_rest = 1.0 - float(p.sum())
    rest = torch.ones_like(q_all, dtype=torch.bool)
    rest[ids] = False
    if p_rest > 1e-6 and bool(rest.any()):
        q_rest = float(q_all[rest].logsumexp(0).exp())
        kl += p_rest * math.log(p_rest / max(q_rest, 1e-300))
    return max(kl, 0.0)


def harmonic_mean(values: list[float | None]) -> float | None:
    """CounterFact's overall score S: harmonic mean of the rates given (Nones skipped).

    Example:
        >>> harmonic_mean([1.0, 0.5, None])
        0.6666666666666666
    """
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if any(v <= 0 for v in vals):
        return 0.0
    return len(vals) / sum(1.0 / v for v in vals)
