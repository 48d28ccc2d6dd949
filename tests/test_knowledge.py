"""The knowledge table loads offline and is consistent; the probes it writes are what a person would write."""

from __future__ import annotations

import pytest

import workbench as wb
from workbench.evaluation.knowledge import (
    Probe,
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
    fact = Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Milan")
    got = [(p.kind, p.prompt, p.target) for p in implication_probes(fact)]
    assert got == [
        ("logical_generalisation", "The Eiffel Tower is located in the country of", "Italy"),
        ("compositionality", "The Eiffel Tower is located in the continent of", "Europe"),
        ("multi_hop", "The official language of the country where the Eiffel Tower is located is", "Italian"),
        ("multi_hop", "The capital of the country where the Eiffel Tower is located is", "Rome"),
    ]
    hops = implication_probes(fact)[1].hops
    assert hops == (("Milan is located in the country of", "Italy"), ("Italy is located in the continent of", "Europe"))
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
