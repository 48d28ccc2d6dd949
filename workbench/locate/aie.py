"""Average indirect effect (ROME, Fig. 2): many traces averaged by token group and layer."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.errors import WorkbenchError
from workbench.facts import ASSETS, Fact, filter_known, read_facts
from workbench.locate.cells import check_settings
from workbench.locate.noise import KNOWN_1000, embedding_std
from workbench.locate.tracing import trace
from workbench.core.model import Model
from workbench.runtime.progress import Cancelled, CancelToken, progress
from workbench.results import Result

GROUPS = (
    "first subject token", "middle subject tokens", "last subject token",
    "first subsequent token", "further tokens", "last token",
)


def token_groups(subject_range: Sequence[int], n_tokens: int) -> dict[str, list[int]]:
    """Positions of each of ROME's six token groups (a group may be empty).

    Example:
        >>> token_groups([2, 5], 10)["middle subject tokens"]
        [3]
    """
    begin, end = subject_range
    last = n_tokens - 1
    return {
        "first subject token": [begin],
        "middle subject tokens": list(range(begin + 1, end - 1)),
        "last subject token": [end - 1],
        "first subsequent token": [end] if end < last else [],
        "further tokens": list(range(end + 1, last)),
        "last token": [last] if last >= end else [],
    }


@dataclass
class AIEResult(Result):
    """Average indirect effects over many facts, per token group and layer.

    Attributes:
        mean: ``{kind: {group: [layers]}}`` mean indirect effect.
        low, high: the 95% interval of that mean (mean ± 1.96 standard errors).
        counts: facts contributing to each group (a group can be empty for a fact).
        skipped: ``[subject, reason]`` of facts not traced.
    """

    model: str
    kinds: list[str]
    groups: list[str]
    n_layers: int
    n_facts: int
    mean: dict[str, dict[str, list[float]]]
    low: dict[str, dict[str, list[float]]]
    high: dict[str, dict[str, list[float]]]
    counts: dict[str, int]
    mean_clean_prob: float
    mean_corrupted_prob: float
    samples: int
    noise: float
    window: int
    seed: int
    seconds: float
    skipped: list[list[str]] = field(default_factory=list)

    def to_pandas(self):
        """Long format: one row per (kind, group, layer)."""
        import pandas as pd

        return pd.DataFrame([
            {"kind": k, "group": g, "layer": layer, "mean": self.mean[k][g][layer],
             "low": self.low[k][g][layer], "high": self.high[k][g][layer], "n": self.counts[g]}
            for k in self.kinds for g in self.groups for layer in range(self.n_layers)
        ])

    @classmethod
    def from_dict(cls, d: dict) -> AIEResult:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def default_trace_facts(model: Model) -> list[Fact]:
    """Known facts for tracing: ``assets/known_trace_facts.json`` (ROME's known_1000
    filtered to what the default model knows) when there, else known_1000 filtered now."""
    path = ASSETS / "known_trace_facts.json"
    if path.exists():
        return read_facts(path)
    return list(filter_known(model, read_facts(KNOWN_1000)))


@dataclass(frozen=True)
class _TraceJob:
    """One fact's share of an average: its trace reduced to group means (picklable for workers)."""

    kinds: tuple
    samples: int
    noise: float
    noise_std: float
    window: int
    seed: int

    def run(self, model: Model, fact: Fact, cancel: CancelToken | None = None) -> tuple:
        """``("skipped", why)`` or ``("traced", clean p, corrupted p, {kind: {group: mean over its tokens}})``."""
        try:
            r = trace(model, fact, kinds=self.kinds, samples=self.samples, noise=self.noise,
                      noise_std=self.noise_std, window=self.window, seed=self.seed, cancel=cancel)
        except Cancelled:
            raise
        except WorkbenchError as exc:
            return ("skipped", str(exc))
        groups = token_groups(r.subject_range, len(r.tokens))
        by_group = {k: {g: ie[pos].mean(0) for g, pos in groups.items() if pos} for k, ie in r.indirect_effects.items()}
        return ("traced", r.clean_prob, r.corrupted_prob, by_group)


def _trace_on_worker(model: Model, item) -> tuple:
    job, fact = item
    return job.run(model, fact)


def average_indirect_effect(
    model: Model,
    facts: Sequence[Fact] | None = None,
    *,
    kind: str | Sequence[str] = "mlp",
    samples: int = 10,
    noise: float = 3.0,
    window: int = 10,
    seed: int = 0,
    limit: int | None = None,
    cancel: CancelToken | None = None,
    save: str | Path | None = None,
    workers=1,
    address: str | None = None,
) -> AIEResult:
    """Trace many facts and average the indirect effects by token group (ROME, Fig. 2).

    Per fact the indirect effect of a group at a layer is the mean over the group's
    tokens; groups a fact lacks (no middle subject tokens, say) leave it out of that
    group's average.

    Args:
        model: a loaded model.
        facts: facts to trace; by default :func:`default_trace_facts`.
        kind: ``"resid"``, ``"mlp"``, ``"attn"``, several of them, or ``"all"``.
        samples, noise, window, seed: as :func:`trace`.
        limit: trace only the first ``limit`` facts.
        cancel: stop early (raises ``Cancelled``).
        save: write the result's JSON there.
        workers: trace the facts on this many Ray actors, each with its own model (the
            ``cluster`` extra; ``"auto"``: one per CPU); the result is the serial one. A fact
            whose worker fails twice is listed in ``skipped`` with why.
        address: with ``workers``: a running Ray cluster (``"auto"``, ``"ray://..."``); default local.

    Example:
        >>> aie = average_indirect_effect(model, kind="mlp", samples=5, limit=20)
        >>> aie.to_pandas().groupby("group")["mean"].max()  # doctest: +SKIP
    """
    started = time.perf_counter()
    kinds = check_settings(samples, window, noise, kind)
    facts = list(default_trace_facts(model) if facts is None else facts)
    if limit is not None:
        facts = facts[:limit]
    if not facts:
        raise WorkbenchError("no facts to trace")
    from workbench.runtime.cluster import check_workers

    workers = check_workers(workers)
    per_group: dict[str, dict[str, list[np.ndarray]]] = {k: {g: [] for g in GROUPS} for k in kinds}
    clean, corrupted, skipped = [], [], []
    job = _TraceJob(kinds=tuple(kinds), samples=samples, noise=noise, noise_std=embedding_std(model),
                    window=window, seed=seed)
    if workers == 1:
        parts = (job.run(model, fact, cancel) for fact in progress(facts, desc="average indirect effect", cancel=cancel))
    else:
        from workbench.runtime.cluster import pool_for

        with pool_for(model, workers, address=address) as pool:
            outcomes = pool.map(_trace_on_worker, [(job, f) for f in facts],
                                desc=f"average indirect effect ({pool.workers} workers)", cancel=cancel)
        parts = (o.value if o.ok else ("skipped", f"worker failure: {o.error}") for o in outcomes)
    for fact, part in zip(facts, parts):
        if part[0] == "skipped":
            skipped.append([fact.subject, part[1]])
            continue
        _, clean_prob, corrupted_prob, by_group = part
        clean.append(clean_prob)
        corrupted.append(corrupted_prob)
        for k, groups in by_group.items():
            for g, row in groups.items():
                per_group[k][g].append(row)
    if not clean:
        raise WorkbenchError(f"none of the {len(facts)} facts could be traced (first problem: {skipped[0][1]})")
    mean, low, high = ({k: {} for k in kinds} for _ in range(3))
    for k in kinds:
        for g in GROUPS:
            rows = np.array(per_group[k][g]) if per_group[k][g] else np.full((1, model.n_layers), np.nan)
            m = rows.mean(0)
            half = 1.96 * rows.std(0, ddof=1) / math.sqrt(len(rows)) if len(rows) > 1 else np.full_like(m, np.nan)
            mean[k][g], low[k][g], high[k][g] = m.tolist(), (m - half).tolist(), (m + half).tolist()
    result = AIEResult(
        model=model.name, kinds=list(kinds), groups=list(GROUPS), n_layers=model.n_layers,
        n_facts=len(clean), mean=mean, low=low, high=high,
        counts={g: len(per_group[kinds[0]][g]) for g in GROUPS},
        mean_clean_prob=float(np.mean(clean)), mean_corrupted_prob=float(np.mean(corrupted)),
        samples=samples, noise=float(noise), window=window, seed=seed,
        seconds=time.perf_counter() - started, skipped=skipped,
    )
    if save is not None:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        result.to_json(save)
    return result
