"""A small knowledge table (countries and cities) and the implication probes it writes for an edit.

The table, ``assets/knowledge/geo.json``, is built offline from GeoNames data by
``scripts/build_knowledge_table.py`` (counts and licences in its ``about``):
countries with capital, continent, currency and languages (the first is the main
one), and cities with their country.

For an edit whose new object is a city or a country, :func:`implication_probes`
writes what should follow from it, RippleEdits-style, each with its ``kind``:

* ``logical_generalisation``: a city's country ("… in the city of" → Milan makes
  "… in the country of" → Italy);
* ``compositionality``: another property of the new object's country in the fact's
  own wording ("… in the continent of" → Europe);
* ``multi_hop``: MQuAKE-style questions through the edited fact ("The official
  language of the country where {subject} is located is" → Italian);
* ``relation_specificity``: another relation of the subject, when the subject is a
  country, that the edit must not move (the answer is the table's, unedited).

Each probe carries the *second hops* it relies on ("Milan is located in the country
of" → Italy): :func:`known_probes` keeps a probe only if the unedited model answers
every one of them (it must know that Milan is in Italy before it can be asked to carry
an edit there).

Example:
    >>> fact = Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Milan")
    >>> [(p.kind, p.prompt, p.target) for p in implication_probes(fact)][0]
    ('logical_generalisation', 'The Eiffel Tower is located in the country of', 'Italy')
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from workbench.errors import DatasetError
from workbench.facts import ASSETS, Fact
from workbench.core.model import Model

TABLE_FILE = ASSETS / "knowledge" / "geo.json"

#: Relations (Wikidata ids) whose object is a place a city names, and how a relative clause says them.
CITY_RELATIONS = {"P19": "was born", "P20": "died", "P937": "worked", "P159": "has its headquarters",
                  "P740": "was founded", "P131": "is located", "P276": "is located"}
#: Relations whose object is a country, and their relative clause ("the country {clause}").
COUNTRY_RELATIONS = {"P17": "where {s} is located", "P495": "where {s} originated",
                     "P27": "of which {s} is a citizen"}
#: How the model is asked each second hop; the answer must begin the table's value.
HOP_PROMPTS = {"country": "{} is located in the country of", "capital": "The capital of {} is",
               "continent": "{} is located in the continent of", "language": "The official language of {} is",
               "currency": "The currency of {} is the"}
#: Relations of a country subject, by the property they ask for (relation specificity skips the edited one).
COUNTRY_SUBJECT_RELATIONS = {"P36": "capital", "P30": "continent", "P37": "language"}
#: A city name counts as one city if its most populous namesake has this many times the next one's people.
DOMINANCE = 3.0


@dataclass(frozen=True)
class Probe:
    """One generated implication probe: ``prompt`` should continue with ``target`` after the edit.

    ``hops``: ``(prompt, answer)`` pairs the unedited model must get right for the probe to be fair.
    """

    prompt: str
    target: str
    kind: str
    hops: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True)
class Table:
    countries: dict
    cities: dict
    about: dict

    def country(self, name: str) -> dict | None:
        return self.countries.get(name)

    def city_country(self, name: str) -> str | None:
        """The country of the city ``name``, or None if unknown or ambiguous (see :data:`DOMINANCE`)."""
        entries = self.cities.get(name)
        if not entries:
            return None
        top = entries[0]
        rivals = [e for e in entries[1:] if e["country"] != top["country"]]
        if rivals and top["population"] < DOMINANCE * rivals[0]["population"]:
            return None
        return top["country"]

    def value(self, country: str, prop: str) -> str | None:
        """``capital``, ``continent``, ``currency`` or ``language`` (the main one) of ``country``."""
        c = self.countries.get(country)
        if c is None:
            return None
        if prop == "language":
            return c["languages"][0] if c["languages"] else None
        return c.get(prop)


@lru_cache(maxsize=1)
def table() -> Table:
    """The knowledge table, read once from ``assets/knowledge/geo.json``.

    Raises:
        DatasetError: the file is missing or not the table (it ships with the package).
    """
    try:
        data = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
        return Table(dict(data["countries"]), dict(data["cities"]), dict(data.get("about", {})))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"the knowledge table {str(TABLE_FILE)!r} is missing or corrupt ({exc}); "
                           "rebuild it with python scripts/build_knowledge_table.py") from None


def _hop(prop: str, entity: str, answer: str) -> tuple[str, str]:
    return HOP_PROMPTS[prop].format(entity), answer


def _subject_phrase(fact: Fact) -> str:
    """The subject as the fact's template says it, mid-sentence ("the Eiffel Tower")."""
    head = fact.prompt.split("{}")[0]
    return ("the " + fact.subject) if head.strip().lower() == "the" else fact.subject


def _place_base(fact: Fact) -> str | None:
    """The fact's text up to its final "in" (a trailing "the city of" dropped), or None."""
    text = fact.text.rstrip()
    for tail in (" the city of", " the town of"):
        text = text.removesuffix(tail)
    return text if text.endswith(" in") else None


def implication_probes(fact: Fact, relation: str | None = None) -> list[Probe]:
    """The probes the knowledge table writes for ``fact``'s edit (see the module docstring).

    ``relation``: the fact's Wikidata relation id (default: looked up from its prompt).
    Facts whose new object is neither a known city nor a country get only
    relation-specificity probes (if the subject is a country), or none. A probe whose
    target the *true* object implies as well (Paris → Lyon leaves "… in the country
    of" at France) is left out: it would pass without any edit.
    """
    from workbench.evaluation.relations import relation_of

    relation = relation or relation_of(fact)
    new = (fact.target_new or "").strip()
    out = _object_probes(fact, relation, new) if new else []
    true = (fact.target_true or "").strip()
    if true and out:
        unchanged = {(p.prompt, p.target.lower()) for p in _object_probes(fact, relation, true, own_value=True)}
        out = [p for p in out if (p.prompt, p.target.lower()) not in unchanged]
    return out + _specificity_probes(fact, relation)


def _object_probes(fact: Fact, relation: str | None, obj: str, *, own_value: bool = False) -> list[Probe]:
    """What follows from ``fact``'s subject having the object ``obj`` (the new or the true one).

    A multi-hop question whose answer is ``obj`` itself (the capital of the country where
    the subject is, when ``obj`` is that capital) is skipped unless ``own_value``.
    """
    t = table()
    out: list[Probe] = []
    s = _subject_phrase(fact)
    if relation in CITY_RELATIONS:
        country = t.city_country(obj)
        base = _place_base(fact)
        if country is not None:
            to_country = _hop("country", obj, country)
            if base is not None:
                out.append(Probe(f"{base} the country of", country, "logical_generalisation", (to_country,)))
                continent = t.value(country, "continent")
                if continent:
                    out.append(Probe(f"{base} the continent of", continent, "compositionality",
                                     (to_country, _hop("continent", country, continent))))
            clause = f"where {s} {CITY_RELATIONS[relation]}"
            for prop, phrase in (("language", "The official language of"), ("capital", "The capital of")):
                value = t.value(country, prop)
                if value and (own_value or value != obj):
                    out.append(Probe(f"{phrase} the country {clause} is", value, "multi_hop",
                                     (to_country, _hop(prop, country, value))))
    if relation in COUNTRY_RELATIONS and t.country(obj) is not None:
        clause = COUNTRY_RELATIONS[relation].format(s=s)
        for prop, phrase, kind in (("capital", "The capital of", "multi_hop"),
                                   ("language", "The official language of", "multi_hop"),
                                   ("currency", "The currency of", "compositionality"),
                                   ("continent", "The continent of", "compositionality")):
            value = t.value(obj, prop)
            if value:
                tail = " is the" if prop == "currency" else " is"
                out.append(Probe(f"{phrase} the country {clause}{tail}", value, kind, (_hop(prop, obj, value),)))
    return out


def _specificity_probes(fact: Fact, relation: str | None) -> list[Probe]:
    """A country subject's other relations: their answers are the table's and must not move."""
    t = table()
    subject = fact.subject.strip()
    if t.country(subject) is None:
        return []
    edited = COUNTRY_SUBJECT_RELATIONS.get(relation)
    out = []
    for prop in ("capital", "continent", "language", "currency"):
        value = t.value(subject, prop)
        if prop == edited or not value:
            continue
        prompt = HOP_PROMPTS[prop].format(subject)
        out.append(Probe(prompt, value, "relation_specificity", ((prompt, value),)))
    return out


def counterfactual_targets(facts: Sequence[Fact], *, seed: int = 0) -> list[Fact]:
    """``facts`` (e.g. ``known_1000``'s, which have no new object) each given a new object.

    As CounterFact chose its edits: another object of the same relation, taken from
    ``facts`` themselves, drawn with a fixed seed per fact (so a rebuild gives the
    same edits). For a relation whose object is a city, the new city is one the table
    places, in another country than the true one (else nothing would follow from the
    edit); for a country relation, another country of the table. Facts that already
    have a new object, or whose relation has no other object, are returned unchanged
    and left out, respectively.

    Example:
        >>> f = counterfactual_targets(read_facts("assets/data/known_1000.json"))
        >>> f[0].target_new != f[0].target_true                              # doctest: +SKIP
        True
    """
    import random

    from workbench.evaluation.relations import relation_of

    t = table()
    relations = [relation_of(f) for f in facts]
    objects: dict[str | None, set[str]] = {}
    for f, rel in zip(facts, relations):
        if f.target_true and rel is not None:
            objects.setdefault(rel, set()).add(f.target_true.strip())
    out = []
    for f, rel in zip(facts, relations):
        if f.target_new:
            out.append(f)
            continue
        true = (f.target_true or "").strip()
        pool = sorted(objects.get(rel, set()) - {true})
        if rel in CITY_RELATIONS:
            home = t.city_country(true)
            pool = [o for o in pool if t.city_country(o) not in (None, home)]
        elif rel in COUNTRY_RELATIONS:
            pool = [o for o in pool if t.country(o) is not None]
        if not pool:
            continue
        rng = random.Random(f"{seed}:{f.case_id}:{f.subject}")
        out.append(f.with_new(rng.choice(pool)))
    return out


def known_probes(model: Model, probes: Sequence[Probe], *, batch_size: int = 32) -> tuple[list[Probe], int]:
    """The probes whose every second hop the model answers (greedy top-1 begins the answer); how many were dropped.

    Each distinct hop is asked once, however many probes share it.
    """
    from workbench.facts import knows

    hops = sorted({h for p in probes for h in p.hops})
    if not hops:
        return list(probes), 0
    # A hop is a fact with the whole prompt as its template (no subject slot to fill).
    as_facts = [Fact(subject=prompt, prompt="{}", target_true=answer) for prompt, answer in hops]
    ok = dict(zip(hops, knows(model, as_facts, batch_size=batch_size)))
    kept = [p for p in probes if all(ok[h] for h in p.hops)]
    return kept, len(probes) - len(kept)
