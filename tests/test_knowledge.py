"""The knowledge table loads offline and is consistent; the probes it writes are what a person would write."""

from __future__ import annotations

import pytest

import workbench as wb
from workbench.evaluation.knowledge import (
    Probe,
    counterfactual_targets,
    implication_probes,
    known_probes,
    table,
)
from workbench.facts import Fact, Implication, read_facts


def test_table_loads_offline_and_its_chains_are_consistent():
    t = table()
    counts = t.about["counts"]
    assert counts["countries"] == len(t.countries) > 200
    assert counts["cities"] == sum(len(v) for v in t.cities.values()) > 10_000
    assert "CC BY 4.0" in t.about["licence"]
    with_capital = [n for n, c in t.countries.items() if c["capital"]]
    assert len(with_capital) == counts["with_capital"]
    for name in with_capital:  # the capital of a country is a city of that country
        assert any(e["country"] == name for e in t.cities[t.countries[name]["capital"]]), name
    assert t.value("Italy", "capital") == "Rome" and t.value("Japan", "currency") == "Yen"
    assert t.city_country("Milan") == "Italy"
    assert t.city_country("Springfield") == "United States"  # namesakes in one country are one answer


def test_an_ambiguous_city_gives_no_country():
    t = table()
    entries = t.cities["London"]
    assert t.city_country("London") == "United Kingdom"  # far larger than London, Ontario
    assert t.city_country("Nowhere-on-Sea") is None
    # Two namesakes of similar size in different countries: not one city.
    ambiguous = [n for n, e in t.cities.items()
                 if len(e) > 1 and e[1]["country"] != e[0]["country"] and e[0]["population"] < 3 * e[1]["population"]]
    assert ambiguous and all(t.city_country(n) is None for n in ambiguous[:20])
    assert entries[0]["population"] > entries[1]["population"]


def test_probes_for_a_hand_picked_fact_are_what_a_person_would_write():
    fact = Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Tokyo")
    got = [(p.kind, p.prompt, p.target) for p in implication_probes(fact)]
    assert got == [
        ("logical_generalisation", "The Eiffel Tower is located in the country of", "Japan"),
        ("compositionality", "The Eiffel Tower is located in the continent of", "Asia"),
        ("multi_hop", "The official language of the country where the Eiffel Tower is located is", "Japanese"),
    ]  # no "capital of the country where ... is" -> Tokyo: that is the edit itself
    milan = implication_probes(fact.with_new("Milan"))
    assert [(p.kind, p.target) for p in milan] == [("logical_generalisation", "Italy"), ("multi_hop", "Italian"),
                                                   ("multi_hop", "Rome")]  # Europe: Paris is there too
    # Lyon is in France like Paris: its country, continent and capital follow without an edit.
    assert [(p.kind, p.target) for p in implication_probes(fact.with_new("Lyon"))] == []
    fact = fact.with_new("Milan")
    assert milan[0].hops == (("Milan is located in the country of", "Italy"),)
    tokyo = implication_probes(fact.with_new("Tokyo"))
    assert tokyo[1].hops == (("Tokyo is located in the country of", "Japan"), ("Japan is located in the continent of", "Asia"))
    # A country subject: its other relations must not move.
    capital = Fact("France", "The capital of {} is", "Paris", "Lyon")
    spec = [(p.kind, p.prompt, p.target) for p in implication_probes(capital)]
    assert ("relation_specificity", "The currency of France is the", "Euro") in spec
    assert not any("capital" in p for _, p, _ in spec)  # the edited relation is not a specificity probe
    # Neither a city nor a country: nothing to imply.
    assert implication_probes(Fact("Toyota Corolla", "{}, developed by", "Toyota", "Fiat")) == []


def test_implication_kind_reads_and_writes(tmp_path):
    fact = Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Milan",
                implication_prompts=(Implication("The Eiffel Tower is located in the country of", "Italy",
                                                 "logical_generalisation"),))
    path = tmp_path / "facts.json"
    wb.write_facts([fact], path)
    back = read_facts(path)[0]
    assert back.implication_prompts[0].kind == "logical_generalisation"
    assert back == fact


def test_second_hop_filter_asks_each_hop_once(tiny_gemma, monkeypatch):
    import workbench.facts as facts

    asked = []

    def fake_knows(model, fs, **kw):
        asked.extend(f.text for f in fs)
        return [not f.text.startswith("Zzyzx") for f in fs]

    monkeypatch.setattr(facts, "knows", fake_knows)
    good = Probe("a", "Italy", "logical_generalisation", (("Milan is located in the country of", "Italy"),))
    also = Probe("b", "Europe", "compositionality", (("Milan is located in the country of", "Italy"),
                                                     ("Italy is located in the continent of", "Europe")))
    bad = Probe("c", "Vanuatu", "logical_generalisation", (("Zzyzx is located in the country of", "Vanuatu"),))
    kept, dropped = known_probes(tiny_gemma, [good, also, bad])
    assert kept == [good, also] and dropped == 1
    assert sorted(asked) == sorted({"Milan is located in the country of", "Italy is located in the continent of",
                                    "Zzyzx is located in the country of"})


@pytest.mark.slow
def test_second_hop_filter_drops_what_the_default_model_cannot_answer(gemma):
    known = Probe("x", "France", "logical_generalisation", (("Paris is located in the country of", "France"),))
    unknown = Probe("y", "Tuvalu", "logical_generalisation",
                    (("Paris is located in the country of", "Tuvalu"),))  # a wrong second hop
    kept, dropped = known_probes(gemma, [known, unknown])
    assert kept == [known] and dropped == 1


def test_counterfactual_targets_follow_counterfacts_recipe():
    known = read_facts(wb.facts.ASSETS / "data" / "known_1000.json")
    t = table()
    edited = counterfactual_targets(known)
    again = counterfactual_targets(known)
    assert [f.target_new for f in edited] == [f.target_new for f in again]  # a rebuild gives the same edits
    assert len(edited) > 0.95 * len(known)
    by_relation: dict = {}
    for f in known:
        by_relation.setdefault(f.relation_id, set()).add(f.target_true)
    for f in edited:
        assert f.target_new != f.target_true and f.target_new in by_relation[f.relation_id]
        if f.relation_id in ("P19", "P20", "P937", "P131"):  # city objects: a city in another country
            assert t.city_country(f.target_new) not in (None, t.city_country(f.target_true)), f
        if f.relation_id in ("P17", "P27", "P495"):
            assert t.country(f.target_new) is not None, f
    assert counterfactual_targets([Fact("Eiffel Tower", "The {} is in", "Paris", "Rome")])[0].target_new == "Rome"


def test_bundled_dataset_carries_the_kept_probes():
    """The build script filled the bundled facts: kinds named, none a probe the true object implies too."""
    import json

    bundled = wb.bundled_facts()
    with_probes = [f for f in bundled if any(i.kind for i in f.implication_prompts)]
    built = json.loads((wb.facts.ASSETS / "knowledge" / "implications_gemma-3-270m.json").read_text())
    distinct = {(f.subject, f.prompt, f.target_new) for f in with_probes}  # the file repeats a few facts
    assert len(distinct) == built["about"]["facts_with_a_kept_probe_by_source"]["known_facts"] > 100
    assert len(built["facts"]) >= 300  # the floor
    for f in with_probes:
        written = {(p.prompt, p.target) for p in implication_probes(f)}
        assert {(i.prompt, i.target) for i in f.implication_prompts if i.kind} <= written, f.subject
