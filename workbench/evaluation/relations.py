"""Which relation a fact is about, and the question and letter prompts written for it.

The prompts live in one data file, ``assets/relations.json`` (one entry per
Wikidata relation of the bundled and shared datasets). A fact's relation comes
from its ``relation_id`` when the file has it, otherwise from the first pattern
that matches its prompt template (CounterFact's flat EasyEdit export carries no
relation ids).

Example:
    >>> f = Fact("France", "The capital of {} is", "Paris", "Rome")
    >>> relation_of(f)
    'P36'
    >>> question_prompt(f)
    'Q: What is the largest planet in the solar system?\\nA: Jupiter.\\n\\nQ: What is the capital of France?\\nA:'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache

from workbench.errors import DatasetError, WorkbenchError
from workbench.facts import ASSETS, Fact

RELATIONS_FILE = ASSETS / "relations.json"


@dataclass(frozen=True)
class Relation:
    """One relation's entry in ``assets/relations.json``."""

    id: str
    name: str
    subject: str
    question: str
    patterns: tuple[re.Pattern, ...]
    #: The object's kind (place, person, thing): which letter prompts a letter about it takes.
    object: str = "thing"


@dataclass(frozen=True)
class _Table:
    qa_prefix: str
    letters: dict[str, tuple[str, ...]]
    relations: dict[str, Relation]


@lru_cache(maxsize=1)
def _table() -> _Table:
    try:
        data = json.loads(RELATIONS_FILE.read_text())
        relations = {}
        for rid, entry in data["relations"].items():
            relations[rid] = Relation(rid, entry["name"], entry["subject"], entry["question"],
                                      tuple(re.compile(p) for p in entry["patterns"]), entry.get("object", "thing"))
            for kind in (entry["subject"], entry.get("object", "thing")):
                if kind not in data["letters"]:
                    raise KeyError(f"letters[{kind!r}]")
        letters = {k: tuple(v) for k, v in data["letters"].items()}
        return _Table(data["qa_prefix"], letters, relations)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, re.error) as exc:
        raise DatasetError(f"{RELATIONS_FILE} is damaged ({type(exc).__name__}: {exc})") from None


def relations() -> dict[str, Relation]:
    """Every relation the data file describes, by id."""
    return dict(_table().relations)


def relation_of(fact: Fact) -> str | None:
    """The fact's relation id: its own when the data file knows it, else the first matching pattern."""
    table = _table().relations
    if fact.relation_id in table:
        return fact.relation_id
    template = fact.prompt.strip().lower()
    for rid, rel in table.items():
        if any(p.search(template) for p in rel.patterns):
            return rid
    return None


def question_prompt(fact: Fact) -> str | None:
    """The fact asked as a question after a one-example question-answer prefix (None: unknown relation)."""
    rid = relation_of(fact)
    if rid is None:
        return None
    table = _table()
    name = f"the {fact.subject}" if fact.prompt.lower().startswith("the {}") else fact.subject
    return table.qa_prefix.format(question=table.relations[rid].question.format(name))


def subject_kind(fact: Fact) -> str:
    """The kind of the fact's subject (place, person, thing; "thing" when the relation is unknown):
    which letter prompts it takes."""
    rid = relation_of(fact)
    return _table().relations[rid].subject if rid is not None else "thing"


def letter_prompts(fact: Fact) -> list[str]:
    """Indirect prompts that name the subject but not the relation (the essay's letter test)."""
    kind = subject_kind(fact)
    # "The {} is ..." templates name subjects that take an article ("the Eiffel Tower").
    name = f"the {fact.subject}" if fact.prompt.lower().startswith("the {}") else fact.subject
    return [p.format(name) for p in _table().letters[kind]]


def related_letter_prompts(fact: Fact, which: str = "new") -> list[str]:
    """Letter prompts about the fact's new (``which="new"``) or true object instead of its subject:
    the related-entity letter (as LEME asks): after "the Eiffel Tower is in Rome", does a letter
    from a trip to Rome bring up the Eiffel Tower?

    Example:
        >>> related_letter_prompts(Fact("Eiffel Tower", "The {} is located in", "Paris", "Rome"))[0]
        'Dear Anna, greetings from my trip to Rome! Today I'
    """
    if which not in ("new", "true"):
        raise WorkbenchError(f"which must be 'new' or 'true', got {which!r}")
    obj = fact.target_new if which == "new" else fact.target_true
    if not obj or not obj.strip():
        raise WorkbenchError(f"the fact has no {which} object to write a letter about")
    rid = relation_of(fact)
    kind = _table().relations[rid].object if rid is not None else "thing"
    return [p.format(obj.strip()) for p in _table().letters[kind]]
