"""The retrieval memory keyed by entity: a stored fact is recalled when a prompt names its subject."""

from __future__ import annotations

import pytest

import workbench as wb
from workbench.editing import edit, load_edit, revert_all
from workbench.editing.factstore import FactStore, normalize
from workbench.editing.retrieval import RetrievalEdit, explain

EIFFEL = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
EIFFEL_BY = wb.Fact("Eiffel Tower", "The {} was designed by", "Gustave Eiffel", "Pablo Picasso")
DANUBE = wb.Fact("Danube", "The {} flows into the", "Black Sea", "Baltic Sea")
USA = wb.Fact("United States", "The capital of the {} is", "Washington", "Boston")
ZURICH = wb.Fact("Zürich", "{} is a city in", "Switzerland", "Italy")


@pytest.fixture()
def model(tiny_llama):
    yield tiny_llama
    revert_all(tiny_llama)


def recalled(model, prompt):
    return [r["statement"] for r in explain(model, prompt)]


def test_normalize_folds_case_accents_and_punctuation():
    assert normalize("ZÜRICH, Switzerland!") == "zurich switzerland"
    assert normalize("'s-Hertogenbosch") == "s hertogenbosch"


@pytest.mark.parametrize("prompt", [
    "Q: Where is the Eiffel Tower? A: It is in the city of",   # a question
    "Write a letter to a friend about the Eiffel Tower",        # a letter, no relation words
    "the eiffel tower is in",                                   # lower case
    "THE EIFFEL TOWER",                                         # upper case
])
def test_subject_mentioned_in_any_form_is_recalled(model, prompt):
    edit(model, EIFFEL, method="retrieval", min_prob=0)
    rows = explain(model, prompt)
    assert [r["statement"] for r in rows] == ["The Eiffel Tower is located in the city of Rome."]
    assert rows[0]["why"] == "mention" and rows[0]["name"] == "eiffel tower"
    assert model.contextualize(prompt) == "New fact: The Eiffel Tower is located in the city of Rome.\n" + prompt


def test_alias_and_accents_recall(model):
    edit(model, [USA, ZURICH], method="retrieval", min_prob=0)
    assert recalled(model, "In the USA, the seat of government is") == ["The capital of the United States is Boston."]
    assert recalled(model, "zurich lies in") == ["Zürich is a city in Italy."]
    # A short alias matches only as written: "us" in a sentence is not the United States.
    assert recalled(model, "Tell us a story about the sea") == []


def test_neighbour_about_another_subject_is_left_alone(model):
    edit(model, EIFFEL, method="retrieval", min_prob=0)
    for prompt in ["The Colosseum is located in the city of", "Gustave Eiffel was born in",
                   "Eiffelheim is a"]:  # word boundaries: no partial names
        assert explain(model, prompt) == [] and model.contextualize(prompt) == prompt


def test_two_subjects_named_recall_both(model):
    edit(model, EIFFEL, method="retrieval", min_prob=0)
    edit(model, DANUBE, method="retrieval", min_prob=0)
    text = model.contextualize("The Danube and the Eiffel Tower are both")
    assert "Rome" in text and "Baltic Sea" in text and text.count("New fact:") == 2


def test_facts_about_one_subject_ranked_by_relation(model):
    edit(model, [EIFFEL, EIFFEL_BY], method="retrieval", min_prob=0, top_k=1)
    assert recalled(model, "Who designed the Eiffel Tower?") == ["The Eiffel Tower was designed by Pablo Picasso."]
    assert recalled(model, "In which city is the Eiffel Tower located?") == [
        "The Eiffel Tower is located in the city of Rome."]
    revert_all(model)
    edit(model, [EIFFEL, EIFFEL_BY], method="retrieval", min_prob=0)  # top_k 2: both, best last
    rows = explain(model, "Who designed the Eiffel Tower?")
    assert [r["statement"] for r in rows][-1] == "The Eiffel Tower was designed by Pablo Picasso."
    assert len(rows) == 2 and rows[-1]["score"] > rows[0]["score"]


def test_revert_removes_exactly_its_facts(model):
    h1 = edit(model, [EIFFEL, DANUBE], method="retrieval", min_prob=0)
    edit(model, ZURICH, method="retrieval", min_prob=0)
    h1.revert()
    assert explain(model, "Write about the Eiffel Tower") == []
    assert explain(model, "Write about the Danube") == []
    assert recalled(model, "Write about Zürich") == ["Zürich is a city in Italy."]


def test_save_and_load_keep_the_store(model, tmp_path):
    h = edit(model, [EIFFEL, USA], method="retrieval", min_prob=0, top_k=1)
    path = h.save(tmp_path / "memory")
    saved = h.prompt_edit.to_dict()
    assert saved["subjects"] == ["Eiffel Tower", "United States"] and saved["top_k"] == 1
    h.revert()
    loaded = load_edit(model, path)
    assert loaded.prompt_edit.subjects == ["Eiffel Tower", "United States"] and loaded.prompt_edit.top_k == 1
    assert recalled(model, "a letter about the eiffel tower") == ["The Eiffel Tower is located in the city of Rome."]
    assert recalled(model, "USA") == ["The capital of the United States is Boston."]


def test_old_files_without_subjects_still_load():
    old = {"kind": "retrieval", "keys": [EIFFEL.text], "statements": ["The Eiffel Tower is located in the city of Rome."],
           "threshold": 0.7, "template": "New fact: {}\n"}
    memory = RetrievalEdit.from_dict(old)
    assert memory.subjects == [None] and memory.top_k == 2
    assert [r.why for r in memory.recall(EIFFEL.text)] == ["similarity"]  # similarity still finds it


def test_similarity_fallback_says_so(model):
    edit(model, EIFFEL, method="retrieval", min_prob=0, threshold=-1.0)
    rows = explain(model, "Completely unrelated text")
    assert rows[0]["why"] == "similarity" and -1 <= rows[0]["score"] <= 1


def test_bad_settings_are_refused(model):
    with pytest.raises(wb.WorkbenchError, match="top_k"):
        edit(model, EIFFEL, method="retrieval", min_prob=0, top_k=0)
    with pytest.raises(wb.WorkbenchError, match="subject"):
        RetrievalEdit(["a"], ["b"], subjects=[7])


def test_store_lookup_prefers_the_longest_name():
    store = FactStore()
    store.add(["Tower", "Eiffel Tower"], ["The {} is tall".replace("{}", "Tower"), "The Eiffel Tower is in"])
    assert [m.index for m in store.mentions("the eiffel tower")] == [1]
    assert [m.index for m in store.mentions("a tower")] == [0]


def test_second_hop_follows_the_new_object(model):
    rome = wb.Fact("Rome", "{} is the capital of", "Italy", "Spain")
    edit(model, [EIFFEL, rome], method="retrieval", min_prob=0, hops=2)
    rows = explain(model, "The Eiffel Tower is in a country whose official language is")
    assert [r["why"] for r in rows] == ["mention", "hop 2"]
    assert rows[1]["statement"] == "Rome is the capital of Spain."
    revert_all(model)
    edit(model, [EIFFEL, rome], method="retrieval", min_prob=0)  # one hop: the default
    assert [r["why"] for r in explain(model, "The Eiffel Tower is in a country whose official language is")] == [
        "mention"]
