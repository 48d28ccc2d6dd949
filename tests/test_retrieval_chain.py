"""The retrieval chain: a nested prompt's bridge question is answered by the model and looked up in the memory."""

from __future__ import annotations

import pytest

import workbench as wb
from workbench.editing import edit, load_edit, method_spec, revert_all
from workbench.editing.overlays import LOADERS
from workbench.editing.retrieval import explain
from workbench.editing.retrieval_chain import ChainEdit, bridge_question, decompose, short_answer

EIFFEL = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
ITALY = wb.Fact("Italy", "The capital of {} is", "Rome", "Milan")
DANUBE = wb.Fact("Danube", "The {} flows into the", "Black Sea", "Baltic Sea")

NESTED = "The capital of the country where the Eiffel Tower is located is"
BRIDGE = "The country where the Eiffel Tower is located is"


@pytest.fixture()
def model(tiny_llama):
    yield tiny_llama
    revert_all(tiny_llama)


def answering(monkeypatch, handle, answer):
    """Make the chain's model answer every bridge question with ``answer``; returns the contexts asked."""
    asked = []

    def ask(context):
        asked.append(context)
        return answer

    monkeypatch.setattr(handle.prompt_edit, "ask", ask)
    return asked


@pytest.mark.parametrize("prompt, question", [
    ("The official language of the country where the Eiffel Tower is located is", BRIDGE),
    ("The capital of the country of which Dante is a citizen is", "The country of which Dante is a citizen is"),
    ("The currency of the country where the Louvre is located is the", "The country where the Louvre is located is"),
    ("What is the capital of the country where the Colosseum is located?", "The country where the Colosseum is located is"),
    ("Q: What is the official language of the country where Mozart was born?\nA:", "The country where Mozart was born is"),
    ("Some text first. The capital of the city in which the Danube ends is", "The city in which the Danube ends is"),
    ("the name of the person who founded Apple was", "The person who founded Apple was"),
])
def test_nested_prompts_give_their_bridge_question(prompt, question):
    assert bridge_question(prompt) == question


@pytest.mark.parametrize("prompt", [
    "The Eiffel Tower is located in the city of",
    "The capital of Italy is",
    "Where is the Eiffel Tower? It is in the city of",
    "Write a letter to a friend about the Eiffel Tower",
    "The official language of France is",
    "The country where the Eiffel Tower is located is",  # already the first hop
    "",
])
def test_prompts_that_are_not_nested_give_none(prompt):
    assert bridge_question(prompt) is None


def test_decompose_names_the_property():
    nested = decompose("The official language of the country where the Eiffel Tower is located is")
    assert (nested.question, nested.property, nested.noun) == (BRIDGE, "official language", "country")
    assert nested.cue == BRIDGE + " the country of"
    assert decompose("The capital of the country of which Dante is a citizen is").noun == "country"
    assert decompose("The coach of the sports team that won the cup was").cue == (
        "The sports team that won the cup was the sports team of")


@pytest.mark.parametrize("text, answer", [
    (" Italy.", "Italy"), (" Italy, and its capital is Rome", "Italy"), (" the United States\n", "the United States"),
    ("\n", None), (" ,", None), (" one two three four five six seven", "one two three four five"),
])
def test_short_answer_cuts_at_punctuation(text, answer):
    assert short_answer(text) == answer


def test_two_hops_write_the_fact_the_bridge_and_the_fact_it_names(model, monkeypatch):
    h = edit(model, [EIFFEL, ITALY], method="retrieval-chain", min_prob=0)
    asked = answering(monkeypatch, h, "Italy")
    text = model.contextualize(NESTED)
    fact1 = "New fact: The Eiffel Tower is located in the city of Rome.\n"
    bridge = f"New fact: {BRIDGE} Italy.\n"
    fact2 = "New fact: The capital of Italy is Milan.\n"
    assert text == fact1 + bridge + fact2 + NESTED
    # The model was asked the first hop after the recalled fact.
    assert asked == [fact1 + BRIDGE + " the country of"]
    rows = explain(model, NESTED)
    assert [r["why"] for r in rows] == ["mention", "bridge", "chain"]
    assert rows[1]["key"] == BRIDGE and rows[1]["name"] == "italy" and rows[1]["subject"] is None
    assert rows[2]["statement"] == "The capital of Italy is Milan."


def test_not_nested_prompts_read_what_retrieval_gives(model, monkeypatch):
    prompts = ["The Eiffel Tower is located in the city of", "Write a letter about the Eiffel Tower",
               "The capital of Italy is", "The Colosseum is located in the city of", "The Danube flows into the"]
    with edit(model, [EIFFEL, ITALY], method="retrieval", min_prob=0):
        plain = [model.contextualize(p) for p in prompts]
    h = edit(model, [EIFFEL, ITALY], method="retrieval-chain", min_prob=0)
    asked = answering(monkeypatch, h, "Italy")
    assert [model.contextualize(p) for p in prompts] == plain
    assert asked == []  # no bridge question, no generation
    h.revert()
    # A nested prompt whose bridge the model cannot answer reads what retrieval gives too.
    h = edit(model, [EIFFEL, ITALY], method="retrieval-chain", min_prob=0)
    answering(monkeypatch, h, None)
    assert model.contextualize(NESTED) == "New fact: The Eiffel Tower is located in the city of Rome.\n" + NESTED


def test_a_neighbour_gets_nothing(model, monkeypatch):
    h = edit(model, [EIFFEL, DANUBE], method="retrieval-chain", min_prob=0)
    answering(monkeypatch, h, "Italy")  # nothing stored about Italy
    for prompt in ["The Colosseum is located in the city of",
                   "The official language of the country where the Colosseum is located is"]:
        assert model.contextualize(prompt) == prompt and explain(model, prompt) == []


def test_an_edit_at_the_second_hop_is_reached_through_the_answer(model, monkeypatch):
    h = edit(model, ITALY, method="retrieval-chain", min_prob=0)
    asked = answering(monkeypatch, h, "Italy")
    prompt = "The capital of the country where the Colosseum is located is"
    assert model.contextualize(prompt) == (
        "New fact: The country where the Colosseum is located is Italy.\n"
        "New fact: The capital of Italy is Milan.\n" + prompt)
    assert asked == ["The country where the Colosseum is located is the country of"]  # nothing recalled before it


def test_chain_with_a_plain_retrieval_edit_first(model, monkeypatch):
    edit(model, EIFFEL, method="retrieval", min_prob=0)
    h = edit(model, ITALY, method="retrieval-chain", min_prob=0)
    answering(monkeypatch, h, "Italy")
    assert [r["why"] for r in explain(model, NESTED)] == ["mention", "bridge", "chain"]


def test_revert_removes_its_facts_and_the_chain(model, monkeypatch):
    h = edit(model, [EIFFEL, ITALY], method="retrieval-chain", min_prob=0)
    answering(monkeypatch, h, "Italy")
    assert explain(model, NESTED)
    h.revert()
    assert explain(model, NESTED) == [] and model.contextualize(NESTED) == NESTED
    assert model.prompt_edits == []


def test_save_and_load_keep_the_facts_and_the_chain(model, monkeypatch, tmp_path):
    h = edit(model, [EIFFEL, ITALY], method="retrieval-chain", min_prob=0, top_k=1, max_new_tokens=5)
    saved = h.prompt_edit.to_dict()
    assert saved["kind"] == "retrieval-chain" and saved["max_new_tokens"] == 5
    path = h.save(tmp_path / "chain")
    h.revert()
    loaded = load_edit(model, path)
    assert loaded.method == "retrieval-chain" and isinstance(loaded.prompt_edit, ChainEdit)
    assert loaded.prompt_edit.model is model and loaded.prompt_edit.max_new_tokens == 5
    assert loaded.prompt_edit.top_k == 1 and loaded.prompt_edit.subjects == ["Eiffel Tower", "Italy"]
    answering(monkeypatch, loaded, "Italy")
    assert [r["why"] for r in explain(model, NESTED)] == ["mention", "bridge", "chain"]


def test_answers_are_generated_once_without_any_rewrite_and_forgotten_when_the_memory_changes(model, monkeypatch):
    import workbench.probing as probing

    calls = []

    def fake_generate(m, text, *, max_new_tokens):
        # The chain's own rewrite (and every other text edit) is off while the model answers.
        assert m.contextualize(text) == text
        calls.append(text)
        return " Italy, of course"

    monkeypatch.setattr(probing, "generate", fake_generate)
    edit(model, [EIFFEL, ITALY], method="retrieval-chain", min_prob=0)
    first = model.contextualize(NESTED)
    assert model.contextualize(NESTED) == first and len(calls) == 1
    assert f"{BRIDGE} Italy.\n" in first
    assert len(model.prompt_edits) == 1  # put back after generating
    edit(model, DANUBE, method="retrieval", min_prob=0)
    model.contextualize(NESTED)
    assert len(calls) == 2  # another edit: asked again


def test_record_loader_and_settings(model):
    spec = method_spec("retrieval-chain")
    assert spec.kind == "prompt" and not spec.compare_default and not spec.edits_layers
    assert "retrieval-chain" in LOADERS
    with pytest.raises(wb.WorkbenchError, match="max_new_tokens"):
        edit(model, EIFFEL, method="retrieval-chain", min_prob=0, max_new_tokens=0)
    assert ChainEdit.from_dict(ChainEdit([EIFFEL.text], ["x."], subjects=["Eiffel Tower"]).to_dict()).model is None


@pytest.mark.slow
def test_gemma_answers_the_bridge_after_the_edited_fact(gemma):
    trento = wb.Fact("Trento", "{} is located in the country of", "Italy", "Brazil")
    with edit(gemma, trento, method="retrieval-chain"):
        rows = explain(gemma, "The official language of the country where Trento is located is")
        assert [r["why"] for r in rows] == ["mention", "bridge"]
        assert rows[1]["statement"] == "The country where Trento is located is Brazil."
    with edit(gemma, EIFFEL, method="retrieval-chain"):
        rows = explain(gemma, "The official language of the country where the Eiffel Tower is located is")
        # The 270M model's prior wins here: after "... in the city of Rome." it still answers
        # France, and the chain writes that (a wrong first hop is written as if it were a fact).
        assert [r["why"] for r in rows] == ["mention", "bridge"]
        assert rows[1]["statement"] == "The country where the Eiffel Tower is located is France."
