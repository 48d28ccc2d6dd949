"""The critics' measures: generated answers, question forms, CounterFact+ and the letter test.

Teacher-forced scores ask whether ``p(new) > p(true)`` right after a prompt.
These ask what the model *says*:

- ``generation``: a greedy answer to the edit prompt, each paraphrase and each
  neighbour prompt (:data:`ANSWER_TOKENS` tokens, judged on the first sentence by
  :func:`~workbench.evaluation.judge.judge`) -- after Yang et al. 2025;
- ``question``: the fact asked as a question (``assets/relations.json``) after a
  one-example question-answer prefix;
- ``plus``: each neighbour prompt after the edit statement ("The Eiffel Tower is
  located in the city of Rome. The Louvre is located in the city of"), scored
  teacher-forced and by generation, and the neighbour KL (NKL) -- CounterFact+ of
  Hoelscher-Obermaier et al. 2023;
- ``letter``: sampled continuations of indirect prompts that name the subject but
  not the relation (the essay's "creative letter"), counted by the objects they
  mention. Slow, so not in :data:`DEFAULT_METRICS`;
- ``related``: the related-entity letter: sampled letters about the new object and
  about the true one, counted by whether they name the subject (does a letter from
  a trip to Rome bring up the Eiffel Tower once it "is" there?). Slow too.

Example:
    >>> s = wb.score_fact(model, fact, metrics=("teacher", "generation"))   # doctest: +SKIP
    >>> s.gen_efficacy, s.generations[0]["text"]                            # doctest: +SKIP
    (0.0, ' Paris, France.')
"""

from __future__ import annotations

from collections.abc import Sequence

from workbench.errors import WorkbenchError
from workbench.evaluation.judge import judge, letter_verdict, mentions
from workbench.evaluation.relations import letter_prompts, question_prompt, related_letter_prompts
from workbench.facts import Fact
from workbench.core.model import Model
from workbench.evaluation.text_cache import cached_texts

METRICS = ("teacher", "generation", "question", "plus", "letter", "related")
DEFAULT_METRICS = ("teacher", "generation", "question", "plus")
#: Tokens generated per answer; the judge reads up to the first sentence end.
ANSWER_TOKENS = 10
#: The letter test: tokens per continuation, continuations per prompt, top-k sampling, seed.
LETTER_TOKENS = 60
LETTER_SAMPLES = 2
LETTER_TOP_K = 5
LETTER_SEED = 0

#: kind -> (FactScores field, the verdict that counts as success)
_KINDS = {
    "rewrite": ("gen_efficacy", "new"),
    "paraphrase": ("gen_paraphrase", "new"),
    "neighborhood": ("gen_neighborhood", "true"),
    "question": ("gen_question", "new"),
    "neighborhood_plus": ("gen_neighborhood_plus", "true"),
}


def check_metrics(metrics: Sequence[str] | str) -> tuple[str, ...]:
    """The metric names, checked, in :data:`METRICS` order (``teacher`` always included).

    Accepts a comma-separated string as the CLI gives it.

    Example:
        >>> check_metrics("generation,letter")
        ('teacher', 'generation', 'letter')
    """
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise WorkbenchError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    chosen = set(metrics) | {"teacher"}
    return tuple(m for m in METRICS if m in chosen)


def plus_prompts(fact: Fact) -> list[str]:
    """The neighbour prompts with the edit statement (edit prompt + new object) before each."""
    statement = f"{fact.text} {fact.target_new.strip()}."
    return [f"{statement} {p}" for p in fact.neighborhood_prompts]


def _answer_items(fact: Fact, metrics: tuple[str, ...]) -> list[tuple[str, str]]:
    """(kind, prompt) for every greedy answer the chosen metrics need."""
    items: list[tuple[str, str]] = []
    if "generation" in metrics:
        items.append(("rewrite", fact.text))
        items += [("paraphrase", p) for p in fact.paraphrase_prompts]
        items += [("neighborhood", p) for p in fact.neighborhood_prompts]
    if "question" in metrics:
        q = question_prompt(fact)
        if q is not None:
            items.append(("question", q))
    if "plus" in metrics:
        items += [("neighborhood_plus", p) for p in plus_prompts(fact)]
    return items


def measure(model: Model, facts: Sequence[Fact], metrics: Sequence[str], *, max_new_tokens: int = ANSWER_TOKENS,
            letter_samples: int = LETTER_SAMPLES) -> list[dict]:
    """The generated measures of each fact as ``FactScores`` fields (``{}`` when none are chosen).

    All facts' answer prompts go through :func:`~workbench.probing.generate_many`
    together (greedy: the same text as one prompt at a time).
    """
    metrics = check_metrics(metrics)
    facts = list(facts)
    per_fact = [_answer_items(f, metrics) for f in facts]
    texts = cached_texts(model, [p for items in per_fact for _, p in items], max_new_tokens=max_new_tokens)
    out: list[dict] = []
    at = 0
    for fact, items in zip(facts, per_fact):
        fields: dict = {}
        gens = []
        for kind, prompt in items:
            text = texts[at]
            at += 1
            gens.append({"kind": kind, "prompt": prompt, "text": text,
                         "verdict": judge(text, new=fact.target_new, true=fact.target_true)})
        for kind, (name, wanted) in _KINDS.items():
            verdicts = [g["verdict"] for g in gens if g["kind"] == kind]
            if verdicts:
                fields[name] = sum(v == wanted for v in verdicts) / len(verdicts)
                fields[f"{name}_neither"] = sum(v == "neither" for v in verdicts) / len(verdicts)
        if gens:
            fields["generations"] = gens
        out.append(fields)
    if "related" in metrics:
        for fields, letters in zip(out, related_letters(model, facts, samples=letter_samples)):
            fields["related_letters"] = letters
            for which in ("new", "true"):
                about = [x for x in letters if x["about"] == which]
                fields[f"related_{which}"] = sum(x["mentions_subject"] for x in about) / len(about)
    if "letter" in metrics:
        for fields, letters in zip(out, letter_test(model, facts, samples=letter_samples)):
            fields["letters"] = letters
            for verdict in ("new", "true", "both", "neither"):
                fields[f"letter_{verdict}"] = sum(x["verdict"] == verdict for x in letters) / len(letters)
    return out


def letter_test(model: Model, facts: Sequence[Fact], *, samples: int = LETTER_SAMPLES, max_new_tokens: int = LETTER_TOKENS,
                seed: int = LETTER_SEED) -> list[list[dict]]:
    """Sampled continuations of each fact's letter prompts, with which objects they mention.

    Returns per fact a list of ``{prompt, text, verdict}``, ``verdict`` one of
    :data:`~workbench.evaluation.judge.LETTER_VERDICTS`. Top-k sampling with a
    fixed seed: the same facts in the same order give the same texts (the unedited model's
    are kept on disk and read again by the next run: :mod:`~workbench.evaluation.text_cache`).
    """
    facts = list(facts)
    prompts = [[p for p in letter_prompts(f) for _ in range(samples)] for f in facts]
    texts = cached_texts(model, [p for ps in prompts for p in ps], max_new_tokens=max_new_tokens,
                         do_sample=True, top_k=LETTER_TOP_K, seed=seed)
    out, at = [], 0
    for fact, ps in zip(facts, prompts):
        rows = []
        for p in ps:
            rows.append({"prompt": p, "text": texts[at],
                         "verdict": letter_verdict(texts[at], new=fact.target_new, true=fact.target_true,
                                                    subject=fact.subject)})
            at += 1
        out.append(rows)
    return out


def related_letters(model: Model, facts: Sequence[Fact], *, samples: int = LETTER_SAMPLES,
                    max_new_tokens: int = LETTER_TOKENS, seed: int = LETTER_SEED) -> list[list[dict]]:
    """The related-entity letter: sampled letters about each fact's new object and about its true
    object (:func:`~workbench.evaluation.relations.related_letter_prompts`), and whether each names
    the subject (whole words, aliases; :func:`~workbench.evaluation.judge.mentions`).

    After an edit that carried, a letter about the new object should bring up the subject more
    often than the unedited model's did, and one about the old object less often. Returns per
    fact a list of ``{about, prompt, text, mentions_subject}``; top-k sampling with a fixed seed.

    Example:
        >>> rows = related_letters(model, [fact])[0]       # doctest: +SKIP
        >>> rows[0]["about"], rows[0]["prompt"]            # doctest: +SKIP
        ('new', 'Dear Anna, greetings from my trip to Rome! Today I')
    """
    facts = list(facts)
    items = [[(which, p) for which in ("new", "true") for p in related_letter_prompts(f, which) for _ in range(samples)]
             for f in facts]
    texts = cached_texts(model, [p for its in items for _, p in its], max_new_tokens=max_new_tokens,
                         do_sample=True, top_k=LETTER_TOP_K, seed=seed)
    out, at = [], 0
    for fact, its in zip(facts, items):
        rows = []
        for which, p in its:
            rows.append({"about": which, "prompt": p, "text": texts[at],
                         "mentions_subject": mentions(texts[at], fact.subject)})
            at += 1
        out.append(rows)
    return out
