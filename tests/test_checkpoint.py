"""Sequential runs checkpointed at every curve point and resumed: the same curve and weights as an unbroken run."""

from __future__ import annotations

import json

import pytest
import torch

import workbench as wb
from workbench.editing import active_edits
from workbench.evaluation import evaluate
from workbench.evaluation.report import EvaluationInterrupted
from workbench.evaluation.run import Run

FAST = dict(every=2, perplexity_texts=2, perplexity_tokens=24, fluency_tokens=6, fluency_prompts=2,
            known_only=False, metrics="teacher", batch_size=2)
# memit-kept: weights plus keys kept for later edits, the state a resume must carry.
EDIT = dict(layers=[1, 2], steps=2, n_prefixes=1, samples=2_000, check_known=False)


def _run(model, facts, **kwargs):
    return evaluate(model, facts, method="memit-kept", mode="sequential", **FAST, **EDIT, **kwargs)


def _curve(report):
    return [(p.n_edits, p.efficacy_score, p.paraphrase_score, p.neighborhood_score, p.perplexity)
            for p in report.curve]


@pytest.mark.slow
def test_a_stopped_run_resumes_to_the_unbroken_runs_curve_and_weights(tiny_gemma, tmp_path, monkeypatch):
    facts = wb.bundled_facts()[:6]
    before = {k: v.clone() for k, v in tiny_gemma.state_dict().items()}
    whole = _run(tiny_gemma, facts, revert=False)
    whole_weights = {k: v.clone() for k, v in tiny_gemma.state_dict().items()}
    wb.revert_all(tiny_gemma)

    # Stopped in the third batch: the checkpoint holds the state after the point at 4 edits.
    real_edit, calls = Run.edit, []

    def edit_then_stop(self, batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_edit(self, batch)

    monkeypatch.setattr(Run, "edit", edit_then_stop)
    with pytest.raises(EvaluationInterrupted) as stopped:
        _run(tiny_gemma, facts, checkpoint=tmp_path / "run")
    part = stopped.value.report
    monkeypatch.setattr(Run, "edit", real_edit)
    assert [p.n_edits for p in part.curve] == [0, 2, 4] and part.summary["n"] == 4
    assert all(torch.equal(before[k], v) for k, v in tiny_gemma.state_dict().items()) and not active_edits(tiny_gemma)
    assert json.loads((tmp_path / "run" / "state.json").read_text())["reached"] == 4

    done = _run(tiny_gemma, facts, checkpoint=tmp_path / "run", revert=False)
    assert _curve(done) == _curve(whole)
    assert [r.immediate for r in done.rows] == [r.immediate for r in whole.rows]
    assert done.settings["resumed"] == [{"n": 4}]
    assert all(torch.equal(whole_weights[k], v) for k, v in tiny_gemma.state_dict().items())
    # The restored edit carries every kept key, in order: the next edit preserves them all.
    from workbench.editing.alphaedit import kept_keys
    assert kept_keys(tiny_gemma, 1, "memit-kept").shape[1] == 6
    wb.revert_all(tiny_gemma)
    assert all(torch.equal(before[k], v) for k, v in tiny_gemma.state_dict().items())


def test_a_checkpoint_of_another_run_or_a_damaged_one_is_refused(tiny_gemma, tmp_path):
    facts = wb.bundled_facts()[:2]
    folder = tmp_path / "run"
    _run(tiny_gemma, facts, checkpoint=folder)
    before = {k: v.clone() for k, v in tiny_gemma.state_dict().items()}
    with pytest.raises(wb.WorkbenchError, match="facts"):
        _run(tiny_gemma, wb.bundled_facts()[2:4], checkpoint=folder)
    with pytest.raises(wb.WorkbenchError, match="batch_size"):
        evaluate(tiny_gemma, facts, method="memit-kept", mode="sequential", checkpoint=folder,
                 **{**FAST, "batch_size": 1}, **EDIT)
    with pytest.raises(wb.WorkbenchError, match="method"):
        evaluate(tiny_gemma, facts, method="memit", mode="sequential", checkpoint=folder, **FAST, **EDIT)
    weights = folder / "state.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(wb.WorkbenchError, match="damaged"):
        _run(tiny_gemma, facts, checkpoint=folder)
    assert all(torch.equal(before[k], v) for k, v in tiny_gemma.state_dict().items()) and not active_edits(tiny_gemma)


def test_checkpoints_are_for_sequential_runs_of_edits_kept_in_the_model(tiny_gemma, tmp_path):
    facts = wb.bundled_facts()[:2]
    with pytest.raises(wb.WorkbenchError, match="sequential runs"):
        evaluate(tiny_gemma, facts, method="rome", checkpoint=tmp_path / "a")
    with pytest.raises(wb.WorkbenchError, match="only rewrites the prompt"):
        evaluate(tiny_gemma, facts, method="in-context", mode="sequential", checkpoint=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
@pytest.mark.parametrize("method, settings", [("wise-paper", dict(steps=2, n_prefixes=0, save_freq=2, merge_freq=4)),
                                              ("grace", dict(steps=3))])
def test_a_memory_in_the_forward_pass_resumes_to_the_unbroken_runs_curve(tiny_gemma, tmp_path, monkeypatch,
                                                                         method, settings):
    facts = wb.bundled_facts()[:6]
    kwargs = dict(FAST, batch_size=1, method=method, mode="sequential", **settings)
    ids = torch.tensor([tiny_gemma.encode(facts[0].text)])
    whole = evaluate(tiny_gemma, facts, revert=False, **kwargs)
    whole_hidden = tiny_gemma.hidden(ids)
    wb.revert_all(tiny_gemma)

    real_edit, calls = Run.edit, []

    def edit_then_stop(self, batch):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_edit(self, batch)

    monkeypatch.setattr(Run, "edit", edit_then_stop)
    with pytest.raises(EvaluationInterrupted):
        evaluate(tiny_gemma, facts, checkpoint=tmp_path / "run", **kwargs)
    monkeypatch.setattr(Run, "edit", real_edit)
    assert tiny_gemma.prompt_edits == []
    done = evaluate(tiny_gemma, facts, checkpoint=tmp_path / "run", revert=False, **kwargs)
    assert done.settings["resumed"] == [{"n": 4}]
    assert _curve(done) == _curve(whole)
    assert torch.equal(tiny_gemma.hidden(ids), whole_hidden)
    wb.revert_all(tiny_gemma)
    assert tiny_gemma.prompt_edits == []


@pytest.mark.slow
def test_stop_after_ends_at_a_sampled_point_and_the_run_goes_on_to_the_unbroken_curve(tiny_gemma, tmp_path):
    facts = wb.bundled_facts()[:6]
    sampled = dict(score_sample=3)
    whole = _run(tiny_gemma, facts, **sampled)
    part = _run(tiny_gemma, facts, checkpoint=tmp_path / "run", stop_after=3, **sampled)
    # The first point at or past 3 edits is at 4, scored like the unbroken run's point there: a sample of 3.
    assert _curve(part) == _curve(whole)[:3] and part.curve[-1].n_scored == 3
    assert part.summary["stopped_early"] is True and part.summary["n"] == len(part.rows) == 4
    # The summary's rates are the last point's, over its sample: the fact it left out has no stale score.
    assert sum(r.after is None for r in part.rows) == 1
    assert part.summary["efficacy_score"] == part.curve[-1].efficacy_score
    assert not active_edits(tiny_gemma)
    rest = _run(tiny_gemma, facts, checkpoint=tmp_path / "run", **sampled)
    assert _curve(rest) == _curve(whole) and rest.summary["n"] == 6


def test_stop_after_is_for_sequential_runs(tiny_gemma):
    with pytest.raises(wb.WorkbenchError, match="stop_after ends a sequential run"):
        evaluate(tiny_gemma, wb.bundled_facts()[:2], method="rome", stop_after=1)
    with pytest.raises(wb.WorkbenchError, match="stop_after must be a positive integer"):
        evaluate(tiny_gemma, wb.bundled_facts()[:2], method="rome", mode="sequential", stop_after=0)
