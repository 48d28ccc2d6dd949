"""Subject enrichment (Geva et al. 2023): how many of the subject's attributes its last token spells.

The first step of recall writes attributes of the subject into the residual
stream at the subject's last token. To watch it, read that residual after every
layer through the final norm and the unembedding (the logit lens), take the
``top_k`` (the paper's 50) tokens, and count the share that are attributes of
the subject: the *attribute rate*.

Which tokens are attributes: the words of ``attributes=`` if given; otherwise
what the knowledge table (``assets/knowledge/geo.json``) says of the subject and
of the fact's true object — a country's capital, continent, currency and
languages; a city's country and that country's — plus the object itself. A top
token counts when its text, stripped and lower-cased, is a token of one of those
words (so " Paris", "Paris" and "paris" all count) and is not a stop word, a
fragment of fewer than three characters, or a piece of the subject's own name.
The table knows places only: for other subjects pass ``attributes=``.

Example:
    >>> r = enrichment(model, Fact("Eiffel Tower", "The {} is located in the city of", "Paris"))
    >>> max(r.rate) > 0   # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from workbench import checks
from workbench.errors import DatasetError, WorkbenchError
from workbench.facts import ASSETS
from workbench.locate.lens import residuals
from workbench.locate.spans import prompt_and_subject, subject_span
from workbench.core.model import Model
from workbench.results import Result

TABLE_FILE = ASSETS / "knowledge" / "geo.json"
#: The paper's number of top tokens read per layer.
TOP_K = 50
#: Words too common to say anything about a subject (the table's phrases hold a few).
STOP_WORDS = frozenset("the and of for with from that this are was were his her its their".split())


@dataclass
class EnrichmentResult(Result):
    """What :func:`enrichment` returns.

    Attributes:
        position: the subject's last token, whose residual is read.
        attributes: the words that count as attributes.
        rate: per layer, the share of the top tokens that are attributes.
        top: per layer, the ``top_k`` tokens, most likely first.
        hits: per layer, the attribute tokens among them.
    """

    model: str
    prompt: str
    subject: str
    tokens: list[str]
    subject_range: list[int]
    position: int
    top_k: int
    attributes: list[str]
    layers: list[int]
    rate: list[float]
    top: list[list[str]]
    hits: list[list[str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_pandas(self):
        """One row per layer: the attribute rate, its hits and the top five tokens."""
        import pandas as pd

        return pd.DataFrame([{"layer": l, "rate": r, "hits": ", ".join(h), "top5": ", ".join(t[:5])}
                             for l, r, h, t in zip(self.layers, self.rate, self.hits, self.top)])


@lru_cache(maxsize=1)
def _table() -> dict:
    try:
        data = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
        return {"countries": dict(data["countries"]), "cities": dict(data["cities"])}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"the knowledge table {str(TABLE_FILE)!r} is missing or corrupt ({exc})") from None


def table_attributes(entity: str) -> list[str]:
    """What the knowledge table says of a country or a city (a city: its country and the
    country's attributes); empty for anything else.

    Example:
        >>> table_attributes("Paris")[:4]
        ['France', 'Paris', 'Europe', 'Euro']
    """
    t = _table()
    name = entity.strip()
    out: list[str] = []
    if name not in t["countries"] and t["cities"].get(name):
        # The most populous namesake: "Paris" is the French one, not the one in Texas.
        country = max(t["cities"][name], key=lambda e: e.get("population", 0))["country"]
        out.append(country)
        name = country
    info = t["countries"].get(name)
    if info:
        out += [v for v in (info.get("capital"), info.get("continent"), info.get("currency")) if v]
        out += list(info.get("languages") or [])
    return list(dict.fromkeys(out))


def default_attributes(subject: str, target_true: str | None) -> list[str]:
    """The subject's and the true object's table attributes, and the object itself."""
    words = table_attributes(subject)
    if target_true:
        words += [target_true.strip(), *table_attributes(target_true)]
    return list(dict.fromkeys(w for w in words if w.strip()))


def _norm(text: str) -> str:
    return text.strip().lower()


def attribute_pieces(model: Model, words: Iterable[str], subject: str) -> set[str]:
    """The normalised token texts that count as attributes (see the module docstring)."""
    def pieces(text: str) -> set[str]:
        out = {_norm(w) for w in text.split()}
        for variant in (text, " " + text):
            out |= {_norm(model.tokenizer.decode([i])) for i in model.encode(variant, prompt=False)}
        return out

    found: set[str] = set()
    for word in words:
        found |= pieces(word.strip())
    own = pieces(subject)
    return {p for p in found - own if len(p) >= 3 and p not in STOP_WORDS}


def enrichment(
    model: Model,
    fact,
    *,
    subject: str | None = None,
    top_k: int = TOP_K,
    attributes: Sequence[str] | None = None,
) -> EnrichmentResult:
    """The attribute rate of the subject's last token after every layer (logit lens, top ``top_k``).

    Args:
        model: a loaded model.
        fact: a :class:`~workbench.facts.Fact`, a ``(prompt, subject)`` pair, or a prompt with ``subject=``.
        subject: the subject, when ``fact`` is a bare prompt.
        top_k: tokens read per layer (the paper's 50).
        attributes: the words that count (e.g. an edit's new object and its properties);
            default the knowledge table's and the fact's true object (module docstring).

    Returns:
        An :class:`EnrichmentResult`.

    Raises:
        WorkbenchError: the subject not in the prompt, a bad ``top_k``, ``attributes`` not words.

    Example:
        >>> r = enrichment(model, ("The {} is located in the city of", "Eiffel Tower"), attributes=["Paris", "France"])
        >>> len(r.rate) == model.n_layers
        True
    """
    top_k = checks.top_k(top_k)
    prompt, subject, target_true = prompt_and_subject(fact, subject)
    if attributes is not None:
        if isinstance(attributes, str) or not all(isinstance(a, str) and a.strip() for a in attributes):
            raise WorkbenchError("attributes must be a list of non-empty words, e.g. ['Paris', 'France']")
        words = list(dict.fromkeys(a.strip() for a in attributes))
    else:
        words = default_attributes(subject, target_true)
    tokens = model.tokens(prompt)
    checks.prompt_length(tokens.shape[1], "enrichment")
    ids = tokens[0].tolist()
    begin, end = subject_span(model, ids, prompt, subject)
    position = end - 1
    wanted = attribute_pieces(model, words, subject)

    names = [model.roles.hook("resid", layer) for layer in range(model.n_layers)]
    acts = residuals(model, tokens, names)
    with torch.no_grad():
        states = torch.stack([acts[name][position] for name in names])
        top_ids = model.unembed(states).float().topk(min(top_k, model.cfg.d_vocab), dim=-1).indices
    top = [[model.tokenizer.decode([int(i)]) for i in row] for row in top_ids]
    hits = [[t for t in row if _norm(t) in wanted] for row in top]
    warnings = []
    if not words:
        warnings.append(f"no attributes known for {subject!r} (the knowledge table holds places): "
                        "pass attributes=[...] to count some")
    return EnrichmentResult(
        model=model.name, prompt=prompt, subject=subject, tokens=model.str_tokens(ids), subject_range=[begin, end],
        position=position, top_k=top_k, attributes=words, layers=list(range(model.n_layers)),
        rate=[len(h) / len(row) for h, row in zip(hits, top)], top=top, hits=hits, warnings=warnings,
    )
