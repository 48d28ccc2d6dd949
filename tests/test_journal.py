"""The search journal: a sequential run replayed from its recorded searches ends on the same weights."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.editing import targets
from workbench.editing.journal import search_journal
from workbench.errors import WorkbenchError
from tests.test_checkpoint import EDIT, _curve, _run  # the same small sequential memit-kept run

ONE = dict(EDIT, min_prob=0)  # two search steps on a tiny model seldom reach the default floor
IDENTITY = {"run": "memit-kept_b2", "facts": 4}


@pytest.mark.slow
def test_a_replay_from_the_journal_runs_no_search_and_ends_on_the_same_weights(tiny_gemma, tmp_path, monkeypatch):
    facts = wb.bundled_facts()[:4]
    path = tmp_path / "journal.safetensors"
    with search_journal(tiny_gemma, path, identity=IDENTITY) as journal:
        first = _run(tiny_gemma, facts, revert=False)
    weights = {k: v.clone() for k, v in tiny_gemma.state_dict().items()}
    wb.revert_all(tiny_gemma)
    assert len(journal) == 4 and journal.hits == 0 and path.exists()

    def no_search(self):
        raise AssertionError("a search ran although the journal holds it")

    monkeypatch.setattr(targets._Search, "run", no_search)
    with search_journal(tiny_gemma, path, identity=IDENTITY) as again:
        second = _run(tiny_gemma, facts, revert=False)
    assert again.hits == 4 and again.added == 0
    assert _curve(second) == _curve(first)
    assert all(torch.equal(weights[k], v) for k, v in tiny_gemma.state_dict().items())
    wb.revert_all(tiny_gemma)


@pytest.mark.slow
def test_a_run_resumed_from_its_checkpoint_reads_the_searches_an_unbroken_run_recorded(tiny_gemma, tmp_path,
                                                                                       monkeypatch):
    # A checkpoint holds its batches as one edit; the journal's key must still see them as batches,
    # or a resumed run searches again what the journal holds (and records what a replay cannot find).
    facts = wb.bundled_facts()[:6]
    path = tmp_path / "journal.safetensors"
    with search_journal(tiny_gemma, path, identity=IDENTITY):
        whole = _run(tiny_gemma, facts)

    def no_search(self):
        raise AssertionError("a search ran although the journal holds it")

    monkeypatch.setattr(targets._Search, "run", no_search)
    with search_journal(tiny_gemma, path, identity=IDENTITY) as book:
        _run(tiny_gemma, facts, checkpoint=tmp_path / "run", stop_after=3)
        rest = _run(tiny_gemma, facts, checkpoint=tmp_path / "run")
    assert book.hits == 6 and book.added == 0
    assert _curve(rest) == _curve(whole)


@pytest.mark.slow
def test_a_search_after_other_edits_is_not_the_same_search(tiny_gemma, tmp_path):
    fact = wb.bundled_facts()[0]
    other = wb.bundled_facts()[1]
    with search_journal(tiny_gemma, tmp_path / "j.safetensors", identity=IDENTITY) as journal:
        wb.edit(tiny_gemma, fact, method="memit", **ONE).revert()
        handle = wb.edit(tiny_gemma, other, method="memit", **ONE)
        wb.edit(tiny_gemma, fact, method="memit", **ONE).revert()  # the same fact, on edited weights
        handle.revert()
    assert len(journal) == 3 and journal.hits == 0


def test_a_journal_of_another_run_or_a_damaged_one_is_refused(tiny_gemma, tmp_path):
    path = tmp_path / "j.safetensors"
    with search_journal(tiny_gemma, path, identity=IDENTITY) as journal:
        journal.put("k", targets.DeltaResult(deltas={"s": torch.ones(3)}, init={"s": torch.zeros(3)},
                                             losses=[1.0], nll=0.5, prob=0.6, steps=1))
    with pytest.raises(WorkbenchError, match="belongs to another run.*facts"):
        with search_journal(tiny_gemma, path, identity=dict(IDENTITY, facts=5)):
            pass
    with search_journal(tiny_gemma, path, identity=IDENTITY) as same:
        res = same.take("k")
    assert torch.equal(res["deltas"]["s"], torch.ones(3)) and res["steps"] == 1 and same.take("other") is None
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(WorkbenchError, match="cannot be read"):
        with search_journal(tiny_gemma, path, identity=IDENTITY):
            pass
