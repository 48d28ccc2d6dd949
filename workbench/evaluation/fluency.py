"""Fluency of generated text: ROME's weighted bi-/tri-gram entropy.

A model broken by an edit tends to repeat itself ("Paris Paris Paris ...");
repetition lowers the entropy of a text's n-gram distribution. Following the
ROME paper, a text's fluency is the mean of ``2/3 * H2`` and ``4/3 * H3``,
where ``Hn`` is the entropy (bits) of the frequency distribution of its word
n-grams; a set of generations scores the arithmetic mean over its texts.
This implementation is the workbench's own (regex word tokens, not nltk).

Example:
    >>> ngram_entropy("a b a b a b a b") < ngram_entropy("the cat sat on the mat by the door")
    True
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from workbench.facts import Fact
from workbench.core.model import Model

#: Prompts used when a fact has no generation prompts of its own.
DEFAULT_GENERATION_PROMPTS = ("{} is", "{} was known for", "The history of {}")

_WORD = re.compile(r"\w+|[^\w\s]")
_WEIGHTS = {2: 2 / 3, 3: 4 / 3}


def _entropy(counts: Counter) -> float:
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def ngram_entropy(text: str) -> float:
    """Weighted n-gram entropy of one text (bits): mean of 2/3·H2 and 4/3·H3."""
    words = _WORD.findall(text.lower())
    terms = []
    for n, weight in _WEIGHTS.items():
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        terms.append(weight * _entropy(grams))
    return sum(terms) / len(terms)


def generation_prompts(fact: Fact, *, limit: int = 2) -> list[str]:
    """The fact's generation prompts, or default ones about its subject."""
    prompts = list(fact.generation_prompts) or [p.format(fact.subject) for p in DEFAULT_GENERATION_PROMPTS]
    return prompts[:limit]


def fluency(
    model: Model,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 40,
    seed: int = 0,
) -> tuple[float, list[str]]:
    """Generate from each prompt (top-5 sampling, fixed seed) and score the texts.

    Sampling rather than greedy decoding, as ROME does: greedy text from a small
    model repeats itself even without an edit, hiding the edit's effect.

    Returns:
        ``(mean n-gram entropy, generations)``; each generation includes its prompt.

    Example:
        >>> score, texts = fluency(model, ["Paris is"], max_new_tokens=20)  # doctest: +SKIP
    """
    from workbench.probing import generate

    texts = [p + generate(model, p, max_new_tokens=max_new_tokens, do_sample=True, top_k=5, seed=seed) for p in prompts]
    if not texts:
        return float("nan"), []
    return sum(ngram_entropy(t) for t in texts) / len(texts), texts
