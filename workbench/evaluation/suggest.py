"""Probe prompts for a fact someone typed: paraphrases, neighbours and implications.

A dataset fact comes with its own probes; a typed one ("Barack Obama / {} was born
in / Hawaii → Texas") has none, so an edit of it could only be judged on the prompt
it was made with. :func:`suggest_probes` fills each kind the fact lacks from data
that ships with the workbench:

- paraphrases: the other prompt templates the bundled facts use for the same relation
  (CounterFact words each relation several ways), with this subject;
- neighbours: this fact's template with *other* subjects that have the same true
  object in the bundled facts (an edit of one must leave them alone);
- implications: the knowledge table's probes (:func:`~workbench.evaluation.knowledge.implication_probes`).

Example:
    >>> f = suggest_probes(Fact("Paris", "{} is the capital of", "France", "Italy"))
    >>> f.paraphrase_prompts[:1]                       # doctest: +SKIP
    ('The capital city of Paris is',)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from workbench.facts import Fact, Implication


@dataclass(frozen=True)
class Suggestion:
    """What :func:`suggest` found, and a sentence per kind saying where it came from."""

    fact: Fact
    relation: str | None
    notes: tuple[str, ...]


def _norm(text: str | None) -> str:
    return (text or "").strip().lower()


def suggest(fact: Fact, facts: Sequence[Fact] | None = None, *, paraphrases: int = 3,
            neighbours: int = 3) -> Suggestion:
    """``fact`` with the probe kinds it lacks filled in, and notes on where each came from.

    Kinds the fact already has are kept as they are. ``facts``: the pool to draw
    templates and neighbours from (default: the bundled facts and the implication set).
    """
    from workbench.evaluation.knowledge import implication_probes
    from workbench.evaluation.relations import relation_of, relations

    pool = list(facts) if facts is not None else _default_pool()
    rid = relation_of(fact)
    name = relations()[rid].name if rid is not None else None
    same = [f for f in pool if relation_of(f) == rid] if rid is not None else []
    notes: list[str] = []
    changes: dict = {}
    where = f"relation {rid} ({name})" if rid else "no known relation"

    if not fact.paraphrase_prompts:
        seen = {_norm(fact.prompt)}
        templates = []
        for f in same:
            if _norm(f.prompt) not in seen:
                seen.add(_norm(f.prompt))
                templates.append(f.prompt)
        found = tuple(_fill(t, fact) for t in templates[:paraphrases])
        changes["paraphrase_prompts"] = found
        notes.append(f"{len(found)} paraphrase{'s' if len(found) != 1 else ''} from the bundled templates of {where}"
                     if found else f"no other template of {where} in the bundled facts: type paraphrases")

    if not fact.neighborhood_prompts:
        true = _norm(fact.target_true)
        subjects = []
        for f in same:
            if true and _norm(f.target_true) == true and _norm(f.subject) != _norm(fact.subject) \
                    and f.subject not in subjects:
                subjects.append(f.subject)
        found = tuple(fact.prompt.format(s) for s in subjects[:neighbours])
        changes["neighborhood_prompts"] = found
        notes.append(f"{len(found)} neighbour{'s' if len(found) != 1 else ''}: other bundled subjects whose "
                     f"{name or 'object'} is {fact.target_true}" if found else
                     f"no bundled fact of {where} has the true object {fact.target_true!r}: type neighbours")

    if not fact.implication_prompts and fact.target_new:
        probes = implication_probes(fact, rid)
        found = tuple(Implication(p.prompt, p.target, p.kind) for p in probes)
        changes["implication_prompts"] = found
        notes.append(f"{len(found)} implication{'s' if len(found) != 1 else ''} from the knowledge table"
                     if found else f"the knowledge table implies nothing from {fact.target_new!r} "
                                   "(it knows cities and countries): type implications")

    return Suggestion(replace(fact, relation_id=fact.relation_id or rid, **changes), rid, tuple(notes))


def _fill(template: str, fact: Fact) -> str:
    """``template`` with the fact's subject, said the way the fact's own template says it.

    "The {} is located in" names a subject that takes an article: another template of
    the relation ("{} can be found in") then gets "the Eiffel Tower", capitalised at the start.
    """
    name = fact.subject
    if fact.prompt.lower().startswith("the {}") and not template.lower().rstrip("{} ").endswith("the"):
        head = template.split("{}")[0]
        if not head.strip().lower().endswith("the"):
            name = "the " + fact.subject
    text = template.format(name)
    return text[0].upper() + text[1:] if text.startswith("the ") else text


def suggest_probes(fact: Fact, facts: Sequence[Fact] | None = None, **kwargs) -> Fact:
    """``fact`` with paraphrases, neighbours and implications filled in where it has none (see :func:`suggest`)."""
    return suggest(fact, facts, **kwargs).fact


def _default_pool() -> list[Fact]:
    from workbench.facts import ASSETS, bundled_facts, read_facts

    pool = list(bundled_facts())
    extra = ASSETS / "knowledge" / "implications_gemma-3-270m.json"
    if extra.exists():
        pool += read_facts(extra)
    return pool
