"""The no-weight baselines: in-context and retrieval edits."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.editing import active_edits, edit, revert_all

FACT = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome",
               paraphrase_prompts=["Where is the Eiffel Tower? It is in the city of"],
               neighborhood_prompts=["The Colosseum is located in the city of"])
OTHER = wb.Fact("Danube", "The {} flows into the", "Black Sea", "Baltic Sea")


@pytest.fixture(scope="module")
def model():
    return wb.load_model("tiny-llama")


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["in-context", "retrieval"])
def test_weights_untouched_and_revert_removes(model, method):
    before = snapshot(model)
    h = edit(model, FACT, method=method, min_prob=0)
    assert h.prompt_edit in model.prompt_edits and not h.changes_weights
    assert "Rome" in model.contextualize(FACT.text)
    wb.probe(model, FACT.text, targets=["Rome"])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    h.revert()
    assert model.prompt_edits == [] and active_edits(model) == []
    assert model.contextualize(FACT.text) == FACT.text


def test_in_context_text_and_demonstrations(model):
    with edit(model, FACT, method="in-context", min_prob=0) as h:
        assert model.contextualize("Q") == "New fact: The Eiffel Tower is located in the city of Rome.\nQ"
        d = h.prompt_edit.to_dict()
    from workbench.editing.incontext import InContextEdit

    assert InContextEdit.from_dict(d).rewrite("Q") == "New fact: The Eiffel Tower is located in the city of Rome.\nQ"
    with edit(model, FACT, method="in-context", min_prob=0, demonstrations=3):
        text = model.contextualize("Q")
        assert text.count("New fact:") == 4 and text.endswith("Rome.\nQ")
    with pytest.raises(wb.WorkbenchError):
        edit(model, FACT, method="in-context", min_prob=0, demonstrations=9)


def test_retrieval_recalls_paraphrase_not_neighbour(model):
    with edit(model, FACT, method="retrieval", min_prob=0):
        assert model.contextualize(FACT.paraphrase_prompts[0]).startswith("New fact: The Eiffel Tower")
        assert model.contextualize(FACT.neighborhood_prompts[0]) == FACT.neighborhood_prompts[0]
        assert model.contextualize("My favourite colour is") == "My favourite colour is"


def test_retrieval_edits_share_one_memory(model):
    h1 = edit(model, FACT, method="retrieval", min_prob=0)
    h2 = edit(model, OTHER, method="retrieval", min_prob=0)
    try:
        # One lookup over both facts: each prompt gets exactly its own fact, once.
        a = model.contextualize("The Danube river flows into the")
        b = model.contextualize(FACT.text)
        assert a.count("New fact:") == 1 and "Baltic" in a
        assert b.count("New fact:") == 1 and "Rome" in b
        h1.revert()  # the older edit goes; the memory keeps the other fact
        assert "Baltic" in model.contextualize("The Danube river flows into the")
        assert model.contextualize(FACT.text) == FACT.text
    finally:
        revert_all(model)
    assert model.prompt_edits == []


def test_retrieval_threshold_bounds(model):
    with pytest.raises(wb.WorkbenchError, match="threshold"):
        edit(model, FACT, method="retrieval", min_prob=0, threshold=1.5)
    with edit(model, FACT, method="retrieval", min_prob=0, threshold=-1.0):  # recall everything
        assert model.contextualize("Completely unrelated text").startswith("New fact:")


def test_similarity_sweep_on_bundled_data():
    from workbench.editing.retrieval import similarity_sweep

    sweep = similarity_sweep(wb.bundled_facts()[:60], thresholds=(0.70,))
    row = sweep["rows"][0]
    assert row["paraphrase_recall"] > 0.8 and row["neighborhood_recall"] < 0.2
