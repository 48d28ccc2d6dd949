"""Evaluation: did an edit change what the model knows, or only one prompt's answer?

- :func:`score_fact` -- CounterFact scores (and, separately named, EasyEdit's
  teacher-forced accuracy) of one fact on the model as it is now
  (:func:`score_facts`: many facts, batched);
- :func:`evaluate` -- a method over a dataset: independent, sequential or batch;
- :func:`compare` -- several methods on the same facts;
- :func:`perplexity`, :func:`fluency` -- what the edit did to the language model;
- :func:`fact_profile`, :func:`variance_explained` -- does the tracing peak say where to
  edit? (tracing effect against edit success at every layer, Hase et al.'s analysis);
- the critics' measures beside the teacher-forced ones (``metrics=``, :data:`METRICS`):
  generated answers judged by :func:`workbench.evaluation.judge.judge`, question forms,
  CounterFact+ and NKL, the
  letter test; every summary rate with a 95 % bootstrap interval (:func:`bootstrap`).

What it may import: the model layer, the locator and the editors (it applies
edits through :func:`workbench.editing.edit`) — never ``figures``, ``ui`` or ``cli``.

Example:
    >>> report = wb.evaluate(model, wb.bundled_facts(), method="in-context", limit=10)
    >>> report.summary["paraphrase_score"]   # doctest: +SKIP
"""

from workbench.evaluation.compare import CompareReport, compare
from workbench.evaluation.evaluate import (
    MODES,
    SUMMARY_KEYS,
    CurvePoint,
    EvalReport,
    EvaluationInterrupted,
    FactRow,
    evaluate,
    read_report,
)
from workbench.evaluation.fluency import fluency, ngram_entropy
from workbench.evaluation.generated import DEFAULT_METRICS, METRICS
from workbench.evaluation.intervals import Interval, bootstrap, paired_difference
from workbench.evaluation.letters import letter_rates, letter_shares
from workbench.evaluation.locality import fact_profile, variance_explained
from workbench.evaluation.perplexity import perplexity
from workbench.evaluation.suggest import Suggestion, suggest, suggest_probes
from workbench.evaluation.scores import FactScores, PromptScore, harmonic_mean, score_fact, score_facts

__all__ = [
    "Suggestion", "suggest", "suggest_probes",
    "CompareReport", "CurvePoint", "DEFAULT_METRICS", "EvalReport", "FactRow", "FactScores", "Interval", "METRICS",
    "MODES", "PromptScore", "SUMMARY_KEYS", "bootstrap", "compare", "evaluate", "fact_profile", "fluency",
    "harmonic_mean", "letter_rates", "letter_shares", "ngram_entropy", "paired_difference", "perplexity", "read_report", "score_fact", "score_facts",
    "variance_explained",
]
