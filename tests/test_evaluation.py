"""Evaluation: the scorer against hand-computed probabilities, the modes, the CLI."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

import workbench as wb
from workbench.editing import active_edits, edit
from workbench.evaluation import (
    SUMMARY_KEYS,
    compare,
    evaluate,
    harmonic_mean,
    ngram_entropy,
    perplexity,
    score_fact,
)
from workbench.runtime.progress import Cancelled, CancelToken

os.environ.setdefault("WORKBENCH_PROGRESS", "0")
FAST = dict(every=2, perplexity_texts=2, perplexity_tokens=24, fluency_tokens=6, fluency_prompts=2)


@pytest.fixture(scope="module")
def model():
    return wb.load_model("tiny-llama")


def known_facts(model, n=4):
    """Facts the random tiny model 'knows': the true object is its own top-1 token."""
    facts = []
    for s in ["Paris", "Tokyo", "Berlin", "Rome", "Madrid", "Cairo"][:n]:
        template = "{} is the capital of"
        top = wb.probe(model, template.format(s), top_k=1)[0].top[0].token.strip()
        facts.append(wb.Fact(
            s, template, top, "Mars Station",
            paraphrase_prompts=[f"The city of {s} is the capital of", f"Everyone knows {s} is the capital of"],
            neighborhood_prompts=["London is the capital of", "Lima is the capital of"],
            implication_prompts=[{"prompt": f"{s} is on the planet", "target": "Mars"}],
        ))
    return facts


def hand_prob(model, prompt, target):
    """Mean per-token log-prob of ``target`` after ``prompt``, straight from the HF logits."""
    p_ids = model.encode(model.contextualize(prompt))
    t_ids = model.encode(" " + target.strip(), prompt=False)
    with torch.no_grad():
        logits = model.hf_model(torch.tensor([p_ids + t_ids])).logits[0].float()
    logp = logits.log_softmax(-1)
    lps = [float(logp[len(p_ids) - 1 + k, t]) for k, t in enumerate(t_ids)]
    argmax = [int(logp[len(p_ids) - 1 + k].argmax()) for k in range(len(t_ids))]
    return math.exp(sum(lps) / len(lps)), argmax, t_ids


def test_scores_match_hand_computed_probabilities(model):
    fact = known_facts(model, 1)[0]
    s = score_fact(model, fact)
    by = {(p.kind, p.prompt): p for p in s.prompts}
    for kind, prompts in [("rewrite", [fact.text]), ("paraphrase", fact.paraphrase_prompts),
                          ("neighborhood", fact.neighborhood_prompts)]:
        for p in prompts:
            p_new, am_new, t_new = hand_prob(model, p, fact.target_new)
            p_true, am_true, t_true = hand_prob(model, p, fact.target_true)
            got = by[(kind, p)]
            assert got.p_new == pytest.approx(p_new, rel=1e-4)
            assert got.p_true == pytest.approx(p_true, rel=1e-4)
            assert got.success == ((p_true > p_new) if kind == "neighborhood" else (p_new > p_true))
            am, t = (am_true, t_true) if kind == "neighborhood" else (am_new, t_new)
            assert got.token_acc == pytest.approx(sum(a == b for a, b in zip(am, t)) / len(t))
    rw = by[("rewrite", fact.text)]
    assert s.efficacy == float(rw.p_new > rw.p_true)
    assert s.efficacy_magnitude == pytest.approx(rw.p_new - rw.p_true)
    paras = [by[("paraphrase", p)] for p in fact.paraphrase_prompts]
    assert s.paraphrase == pytest.approx(sum(p.success for p in paras) / 2)
    assert s.paraphrase_magnitude == pytest.approx(sum(p.p_new - p.p_true for p in paras) / 2)
    neigh = [by[("neighborhood", p)] for p in fact.neighborhood_prompts]
    assert s.neighborhood_magnitude == pytest.approx(sum(p.p_true - p.p_new for p in neigh) / 2)
    imp = fact.implication_prompts[0]
    p_imp, am_imp, t_imp = hand_prob(model, imp.prompt, imp.target)
    assert s.implication_prob == pytest.approx(p_imp, rel=1e-4)
    assert s.implication == float(am_imp[0] == t_imp[0])
    # The true object is the tiny model's top-1, so before any edit the fact is not "edited".
    assert s.efficacy == 0.0 and s.easyedit_locality_acc is None


def test_scores_agree_with_probe(model):
    fact = known_facts(model, 1)[0]
    s = score_fact(model, fact)
    r = wb.probe(model, [fact.text] + list(fact.paraphrase_prompts), targets=[fact.target_new, fact.target_true])
    for p, row in zip(s.prompts[:3], r.prompts):
        assert p.p_new == pytest.approx(row.target(fact.target_new).prob, rel=1e-5)
        assert p.p_true == pytest.approx(row.target(fact.target_true).prob, rel=1e-5)


def test_batched_scores_equal_one_fact_at_a_time(model):
    """score_facts batches several facts' sequences; each fact's numbers are score_fact's."""
    from workbench.evaluation.scores import score_facts

    facts = known_facts(model, 4)
    one = [score_fact(model, f) for f in facts]
    many = score_facts(model, facts, batch_size=5)  # batches that cut across facts
    for a, b in zip(one, many):
        assert [p.prompt for p in a.prompts] == [p.prompt for p in b.prompts]
        for pa, pb in zip(a.prompts, b.prompts):
            assert pb.p_new == pytest.approx(pa.p_new, rel=1e-5) and pb.success == pa.success
            assert pb.p_true == pytest.approx(pa.p_true, rel=1e-5) if pa.p_true is not None else pb.p_true is None
        assert b.neighbor_argmax == a.neighbor_argmax
    with pytest.raises(wb.WorkbenchError, match="reference scores for"):
        score_facts(model, facts, references=one[:2])


def test_in_context_edit_flips_scores_and_locality_needs_reference(model):
    # A mechanical check: a prompt edit that forces the new object is seen by the scorer.
    fact = known_facts(model, 1)[0]
    before = score_fact(model, fact)
    with edit(model, fact, method="in-context", min_prob=0):
        after = score_fact(model, fact, reference=before)
        assert model.contextualize(fact.text).startswith("New fact: ")
    assert after.easyedit_locality_acc is not None and 0.0 <= after.easyedit_locality_acc <= 1.0
    assert model.prompt_edits == []


def test_harmonic_mean_and_ngram_entropy():
    assert harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert harmonic_mean([1.0, 0.0, 0.5]) == 0.0
    assert harmonic_mean([None]) is None
    # "a b c d": 3 distinct bigrams (log2 3), 2 distinct trigrams (1 bit).
    assert ngram_entropy("a b c d") == pytest.approx((2 / 3 * math.log2(3) + 4 / 3 * 1.0) / 2)
    assert ngram_entropy("x x x x x x") == 0.0


def test_perplexity_is_finite_and_sees_prompt_edits(model):
    texts = ["The river flows through the old town and into the sea."]
    base = perplexity(model, texts, max_tokens=16)
    assert math.isfinite(base) and base > 1
    fact = known_facts(model, 1)[0]
    with edit(model, fact, method="in-context", min_prob=0):
        assert perplexity(model, texts, max_tokens=16) != base


def test_perplexity_batched_equals_hand_computed(model):
    """Texts of different lengths, padded into batches: exp of the mean NLL of every text token."""
    texts = ["The river flows through the old town and into the sea.", "A short one.",
             "Mountains rise to the north, where the winters are long and cold and dark."]
    nll, count = 0.0, 0
    for text in texts:
        ids = model.encode(text)[:20]
        with torch.no_grad():
            logp = model.hf_model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
        nll -= sum(float(logp[i - 1, t]) for i, t in enumerate(ids) if i >= 1)
        count += len(ids) - 1
    expected = math.exp(nll / count)
    for batch_size in (1, 2, 3):
        assert perplexity(model, texts, max_tokens=20, batch_size=batch_size) == pytest.approx(expected, rel=1e-5)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode", ["independent", "sequential", "batch"])
def test_modes_on_in_context(model, mode):
    facts = known_facts(model, 4)
    report = evaluate(model, facts, method="in-context", mode=mode, **FAST)
    s = report.summary
    for key in SUMMARY_KEYS:
        assert key in s
    assert s["n"] == 4 and s["n_skipped"] == 0 and s["mode"] == mode
    assert all(r.after is not None for r in report.rows)
    assert s["implication_score"] is not None
    assert model.prompt_edits == [] and active_edits(model) == []
    if mode == "sequential":
        assert [p.n_edits for p in report.curve] == [0, 2, 4]
    json.dumps(report.to_dict())
    assert len(report.to_pandas()) == 4


def test_report_json_round_trip_and_bad_files(model, tmp_path):
    report = evaluate(model, known_facts(model, 4), method="in-context", mode="sequential", **FAST)
    path = tmp_path / "report.json"
    report.to_json(path)
    again = wb.read_report(path)
    assert again.to_dict() == report.to_dict()
    assert again.curve_frame().equals(report.curve_frame())
    with pytest.raises(wb.WorkbenchError, match="no evaluation report"):
        wb.read_report(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(wb.WorkbenchError, match="not valid JSON"):
        wb.read_report(tmp_path / "bad.json")
    broken = report.to_dict()
    broken["curve"][1]["n_editz"] = broken["curve"][1].pop("n_edits")
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(wb.WorkbenchError, match=r"curve\[1\] is malformed"):
        wb.read_report(tmp_path / "broken.json")
    with pytest.raises(wb.WorkbenchError, match="no 'summary'"):
        wb.EvalReport.from_dict({"rows": []})


def test_committed_results_load():
    # Every committed results file is a report the library can read back (notebook 05 plots them).
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parent.parent / "assets" / "results").rglob("*_*.json")):
        data = json.loads(path.read_text())
        if "summary" in data and "method" in data["summary"]:  # an evaluation report, not another study
            rep = wb.read_report(path)
            assert rep.summary["n"] == len(rep.rows)


def test_sequential_keeps_edits_without_revert(model):
    facts = known_facts(model, 3)
    evaluate(model, facts, method="in-context", mode="sequential", revert=False, **FAST)
    assert len(model.prompt_edits) == 3
    wb.revert_all(model)
    assert model.prompt_edits == []


def test_unknown_facts_are_skipped_and_empty_is_an_error(model, tmp_path):
    facts = known_facts(model, 3)
    wrong = wb.Fact("Oslo", "{} is the capital of", "zzzqqq Norway", "Sweden")
    report = evaluate(model, facts + [wrong], method="in-context", **FAST)
    assert report.summary["n"] == 3 and report.summary["n_skipped"] == 1
    with pytest.raises(wb.WorkbenchError, match="no facts left"):
        evaluate(model, [wrong], method="in-context", **FAST)
    # The CLI's --include-unknown edits it all the same.
    from workbench.cli import main

    data, out = tmp_path / "facts.json", tmp_path / "out.json"
    wb.write_facts([wrong], data)
    assert main(["evaluate", "--method", "in-context", "--dataset", str(data), "--model", "tiny-llama", "--json",
                 str(out), "--include-unknown", "--metrics", "teacher", "--every", "2", "--perplexity-texts", "2",
                 "--fluency-tokens", "4"]) == 0
    summary = json.loads(out.read_text())
    assert summary["n"] == 1 and summary["n_skipped"] == 0
    with pytest.raises(wb.WorkbenchError, match="unknown evaluation mode"):
        evaluate(model, facts, method="in-context", mode="bogus")


def test_cancel_and_interrupt_leave_no_edit(model, monkeypatch):
    facts = known_facts(model, 3)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        evaluate(model, facts, method="in-context", mode="sequential", cancel=token, **FAST)
    assert model.prompt_edits == [] and active_edits(model) == []

    import sys

    ev = sys.modules["workbench.evaluation.sequential"]  # the sequential runner's module

    real = ev.score_facts
    seen = {"edits": 0}

    def interrupting(m, *a, **k):
        # Interrupt while scoring the third edit: three edits are then in place.
        seen["edits"] = max(seen["edits"], len(m.prompt_edits))
        if len(m.prompt_edits) == 3:
            raise KeyboardInterrupt
        return real(m, *a, **k)

    monkeypatch.setattr(ev, "score_facts", interrupting)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, facts, method="in-context", mode="sequential", **FAST)
    assert seen["edits"] == 3  # the interrupt came with edits in place, not before any
    assert model.prompt_edits == [] and active_edits(model) == []


def test_cli_sigterm_writes_the_facts_done(model, monkeypatch, tmp_path):
    # A background job's shell ignores SIGINT; SIGTERM must stop a run as Ctrl-C does.
    import signal
    import sys

    from workbench.cli import main

    ev = sys.modules["workbench.evaluation.evaluate"]
    real = ev._Independent.run
    calls = {"n": 0}

    def terminated(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # its handler raises at the next bytecode
        return real(self, *a, **k)

    monkeypatch.setattr(ev._Independent, "run", terminated)
    data, report = tmp_path / "facts.json", tmp_path / "report.json"
    wb.write_facts(known_facts(model, 4), data)
    before = signal.getsignal(signal.SIGTERM)
    rc = main(["evaluate", "--method", "in-context", "--dataset", str(data), "--model", "tiny-llama",
               "--report", str(report), "--metrics", "teacher", "--every", "2", "--perplexity-texts", "2",
               "--fluency-tokens", "4"])
    assert rc == 130
    done = json.loads(report.read_text())
    assert done["summary"]["interrupted"] and done["summary"]["n"] == 2  # the third fact was in hand
    assert signal.getsignal(signal.SIGTERM) is before  # the CLI's handler is gone again


@pytest.mark.parametrize("mode", ["independent", "sequential"])
def test_time_limit_keeps_what_was_measured(model, monkeypatch, mode):
    """Past the time limit no new edit starts; the report covers the facts done."""
    import sys

    ev = sys.modules["workbench.evaluation.evaluate"]
    clock = {"t": 0.0}
    edits = {"n": 0}

    # A fake clock that advances 100 s with every edit.
    monkeypatch.setattr(ev.time, "perf_counter", lambda: clock["t"])
    import workbench.editing as editing
    real = editing.edit

    def slow_edit(*a, **k):
        edits["n"] += 1
        clock["t"] += 100.0
        return real(*a, **k)

    monkeypatch.setattr(editing, "edit", slow_edit)
    facts = known_facts(model, 6)
    report = evaluate(model, facts, method="in-context", mode=mode, time_limit=150, **FAST)
    s = report.summary
    assert s["stopped_early"] is True
    if mode == "independent":
        # Facts 0 and 1 start before 150 s; fact 2 would start at 200 s.
        assert edits["n"] == 2 and s["n"] == 2 and len(report.rows) == 2
    else:
        # The check comes after each curve point (every 2 edits): 2 edits = 200 s > 150.
        assert edits["n"] == 2 and s["n"] == 2 and [p.n_edits for p in report.curve] == [0, 2]
    assert all(r.after is not None for r in report.rows)
    assert report.settings["time_limit"] == 150
    assert model.prompt_edits == [] and active_edits(model) == []
    full = evaluate(model, facts, method="in-context", mode=mode, **FAST)
    assert full.summary["stopped_early"] is False and full.summary["n"] == 6
    with pytest.raises(wb.WorkbenchError, match="time_limit"):
        evaluate(model, facts, method="in-context", mode=mode, time_limit=0, **FAST)


def test_a_resumed_run_samples_the_unedited_letters_an_unbroken_run_does(model, monkeypatch):
    """The unedited model is scored in fixed blocks of the selection, done facts included: a sampled
    letter depends on its batch, so a run resumed mid-block must sample that block whole."""
    import sys

    ev = sys.modules["workbench.evaluation.evaluate"]
    monkeypatch.setenv("WORKBENCH_TEXT_CACHE", "0")   # the batches, not kept texts, must agree
    facts = known_facts(model, 4)
    settings = dict(FAST, metrics="teacher,letter")
    full = evaluate(model, facts, method="in-context", **settings)
    clock = {"t": 0.0}
    real_edit = wb.editing.edit

    def slow_edit(*a, **k):
        clock["t"] += 100.0
        return real_edit(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(ev.time, "perf_counter", lambda: clock["t"])
        m.setattr(wb.editing, "edit", slow_edit)
        part = evaluate(model, facts, method="in-context", time_limit=150, **settings)
    assert part.summary["n"] == 2
    done = evaluate(model, facts, method="in-context", resume=part, **settings)
    assert [r.before["letters"] for r in done.rows] == [r.before["letters"] for r in full.rows]


def test_resume_goes_on_where_a_stopped_run_left(model, monkeypatch, tmp_path):
    """A run stopped by its time limit, saved and resumed, ends where one uninterrupted run does."""
    import sys

    ev = sys.modules["workbench.evaluation.evaluate"]
    import workbench.editing as editing
    real = editing.edit
    clock, edits = {"t": 0.0}, {"n": 0}

    def slow_edit(*a, **k):
        edits["n"] += 1
        clock["t"] += 100.0
        return real(*a, **k)

    facts = known_facts(model, 6)
    full = evaluate(model, facts, method="in-context", **FAST)
    with monkeypatch.context() as m:
        m.setattr(ev.time, "perf_counter", lambda: clock["t"])
        m.setattr(editing, "edit", slow_edit)
        part = evaluate(model, facts, method="in-context", time_limit=150, **FAST)
        assert part.summary["stopped_early"] and part.summary["n"] == 2
        part.to_json(tmp_path / "part.json")
        edits["n"] = 0
        done = evaluate(model, facts, method="in-context", resume=wb.read_report(tmp_path / "part.json"), **FAST)
    assert edits["n"] == 4  # only the facts the first run did not reach
    assert done.summary["n"] == 6 and not done.summary["stopped_early"]
    assert [r.to_dict() for r in done.rows[:2]] == [r.to_dict() for r in part.rows]
    def numbers(scores):
        return {k: v for k, v in scores.items() if not isinstance(v, list)}  # the texts are compared apart

    for a, b in zip(done.rows, full.rows):
        assert a.subject == b.subject and numbers(a.before) == pytest.approx(numbers(b.before), abs=1e-9)
        assert numbers(a.after) == pytest.approx(numbers(b.after), abs=1e-9)
        assert a.after["generations"] == b.after["generations"]
    for key in ("efficacy_score", "paraphrase_score", "neighborhood_score", "perplexity_before", "perplexity_after",
                "fluency", "n_skipped"):
        assert done.summary[key] == pytest.approx(full.summary[key]), key
    assert done.settings["resumed"] == [{"n": 2, "seconds_total": part.summary["seconds_total"]}]
    assert model.prompt_edits == [] and active_edits(model) == []
    # A report that is not an earlier part of this run is refused, by name.
    with pytest.raises(wb.WorkbenchError, match="method"):
        evaluate(model, facts, method="retrieval", resume=part, **FAST)
    with pytest.raises(wb.WorkbenchError, match="row 0"):
        evaluate(model, facts[::-1], method="in-context", resume=part, **FAST)
    with pytest.raises(wb.WorkbenchError, match="every"):
        evaluate(model, facts, method="in-context", resume=part, **{**FAST, "every": 3})
    with pytest.raises(wb.WorkbenchError, match="independent"):
        evaluate(model, facts, method="in-context", mode="sequential", resume=part, **FAST)
    assert model.prompt_edits == [] and active_edits(model) == []


def test_sequential_weight_edits_revert_bitwise(model):
    """A toy weight method (registered here) to check the bitwise revert of sequential mode."""
    from workbench.editing import METHODS, register_method
    from workbench.editing.handle import commit_weights

    name = "test-bump"
    if name not in METHODS:
        @register_method(name)
        def bump(model, facts, *, layers=None, scale=1e-3):
            key = next(k for k, _ in model.hf_model.named_parameters() if "down_proj" in k)
            w = dict(model.hf_model.named_parameters())[key].detach()
            return commit_weights(model, name, [0], [f.to_dict() for f in facts],
                                  lambda: {key: w + scale * torch.randn_like(w)})

    facts = known_facts(model, 4)
    before = _state(model)
    report = evaluate(model, facts, method=name, mode="sequential", **FAST)
    assert report.summary["n"] == 4 and len(report.curve) == 3
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sequential_in_batches(model):
    """batch_size=k: k facts per edit call, kept one after another; curve points as the facts pass `every`."""
    from workbench.editing import METHODS, register_method
    from workbench.editing.handle import commit_weights

    name, calls = "test-batch-bump", []
    if name not in METHODS:
        @register_method(name)
        def bump(model, facts, *, layers=None):
            calls.append(len(facts))
            key = next(k for k, _ in model.hf_model.named_parameters() if "down_proj" in k)
            w = dict(model.hf_model.named_parameters())[key].detach()
            return commit_weights(model, name, [0], [f.to_dict() for f in facts], lambda: {key: w * (1 + 1e-4)})

    facts = known_facts(model, 5)
    before = _state(model)
    report = evaluate(model, facts, method=name, mode="sequential", batch_size=2, **{**FAST, "every": 3})
    assert calls == [2, 2, 1] and report.settings["batch_size"] == 2
    # Facts edited after each batch: 2, 4, 5; points where a multiple of 3 is passed (4) and at the end (5).
    assert [p.n_edits for p in report.curve] == [0, 4, 5]
    assert all(r.immediate is not None and r.after is not None for r in report.rows)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(wb.WorkbenchError, match="batch_size is for sequential runs"):
        evaluate(model, facts, method=name, batch_size=2, **FAST)


def test_drift_off_skips_perplexity_and_fluency_and_keeps_the_rates(model, monkeypatch):
    facts = known_facts(model, 3)
    full = evaluate(model, facts, method="in-context", **FAST)
    import sys

    def never(*args, **kwargs):
        raise AssertionError("measured with drift=False")

    for name in ("workbench.evaluation.run", "workbench.evaluation.independent"):  # where the runs measure drift
        monkeypatch.setattr(sys.modules[name], "perplexity", never)
        monkeypatch.setattr(sys.modules[name], "fluency", never)
    quick = evaluate(model, facts, method="in-context", drift=False, **FAST)
    for key in ("perplexity_before", "perplexity_after", "fluency_before", "fluency"):
        assert quick.summary[key] is None and full.summary[key] is not None, key
    for key in ("efficacy_score", "paraphrase_score", "neighborhood_score"):
        assert quick.summary[key] == full.summary[key], key
    # The sequential curve is one of perplexity too: refused, and nothing edited.
    with pytest.raises(wb.WorkbenchError, match="independent mode"):
        evaluate(model, facts, method="in-context", mode="sequential", drift=False, **FAST)
    assert active_edits(model) == []


def test_compare_table(model):
    facts = known_facts(model, 2)
    table = compare(model, facts, methods=["in-context", "in-context"], **FAST)
    df = table.to_pandas()
    assert list(df["method"]) == ["in-context", "in-context"]
    from workbench.figures.evaluation import degradation_figure, scores_figure

    scores_figure(table)
    seq = evaluate(model, facts, method="in-context", mode="sequential", **FAST)
    degradation_figure([seq])


def test_compare_reports_fact_by_fact_and_its_last_update_is_the_result(model):
    """``on_update`` sees the running method's rows grow one fact at a time, after the methods
    done; the last partial of each method summarises what its final report does."""
    facts = known_facts(model, 3)
    seen = []
    table = compare(model, facts, methods=["in-context", "retrieval"], on_update=seen.append, drift=False, **FAST)
    n = table.reports[0].summary["n"]
    assert [(len(u.reports), u.reports[-1].summary["n"]) for u in seen] == \
        [(1, k) for k in range(1, n + 1)] + [(2, k) for k in range(1, n + 1)]
    assert all(u.reports[-1].summary["partial"] and u.reports[-1].summary["n_total"] == n for u in seen)
    assert seen[-1].reports[0] is table.reports[0]  # the finished method, as returned
    for last, final in ((seen[n - 1].reports[-1], table.reports[0]), (seen[-1].reports[-1], table.reports[1])):
        for key in ("efficacy_score", "paraphrase_score", "neighborhood_score", "implication_score"):
            assert last.summary[key] == final.summary[key], key
            assert last.summary["intervals"].get(key) == final.summary["intervals"].get(key), key
        assert [r.subject for r in last.rows] == [r.subject for r in final.rows]
    with pytest.raises(wb.WorkbenchError, match="independent runs fact by fact"):
        evaluate(model, facts, method="in-context", mode="sequential", on_row=print, **FAST)
    assert active_edits(model) == []


def test_cli_evaluate_json(tmp_path, capsys):
    from workbench.cli import main

    data = tmp_path / "facts.json"
    model = wb.load_model("tiny-llama")
    wb.write_facts(known_facts(model, 2), data)
    out = tmp_path / "out.json"
    rc = main(["evaluate", "--method", "in-context", "--dataset", str(data), "--model", "tiny-llama",
               "--json", str(out), "--every", "2", "--perplexity-texts", "2", "--fluency-tokens", "4"])
    assert rc == 0
    summary = json.loads(out.read_text())
    for key in ("method", "mode", "n", "n_skipped", "efficacy_score", "paraphrase_score", "neighborhood_score",
                "implication_score", "fluency", "perplexity_before", "perplexity_after", "seconds_per_edit"):
        assert key in summary
    assert summary["stopped_early"] is False
    printed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    lo, hi = summary["intervals"]["efficacy_score"]
    assert f"[{lo:.3g}, {hi:.3g}]" in printed["efficacy_score"]  # a rate beside its interval
    assert "n=2" in printed["implication_score"] and "counts" not in printed
    # A time limit already spent when the first fact comes up: the run reports zero facts, not an error.
    rc = main(["evaluate", "--method", "in-context", "--dataset", str(data), "--model", "tiny-llama",
               "--json", str(out), "--every", "2", "--perplexity-texts", "2", "--fluency-tokens", "4",
               "--time-limit", "1e-9", "--report", str(tmp_path / "part.json"), "--overwrite"])
    assert rc == 0
    summary = json.loads(out.read_text())
    assert summary["stopped_early"] is True and summary["n"] == 0
    # --resume goes on from that report's rows (none here) to the end.
    rc = main(["evaluate", "--method", "in-context", "--dataset", str(data), "--model", "tiny-llama",
               "--json", str(out), "--every", "2", "--perplexity-texts", "2", "--fluency-tokens", "4",
               "--resume", str(tmp_path / "part.json"), "--overwrite"])
    assert rc == 0
    summary = json.loads(out.read_text())
    assert summary["stopped_early"] is False and summary["n"] == 2


def test_cli_bad_input(tmp_path, capsys):
    from workbench.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"foo": 1}]))
    assert main(["evaluate", "--method", "in-context", "--dataset", str(bad), "--model", "tiny-llama"]) == 2
    err = capsys.readouterr().err
    assert "record 0" in err and "CounterFact" in err
    bad.write_text(json.dumps([{"requested_rewrite": {"subject": "X", "prompt": "{} is"}}]))
    assert main(["evaluate", "--method", "in-context", "--dataset", str(bad), "--model", "tiny-llama"]) == 2
    assert "record 0" in capsys.readouterr().err


@pytest.mark.slow
def test_gemma_in_context_independent(gemma):
    model = gemma
    report = evaluate(model, wb.bundled_facts(), method="in-context", limit=3, every=3,
                      perplexity_texts=2, perplexity_tokens=32, fluency_tokens=10)
    s = report.summary
    assert s["n"] == 3
    assert s["efficacy_score_before"] == 0.0  # the model knows the true objects
    assert s["efficacy_score"] >= 2 / 3       # stating the new fact mostly works
    assert math.isfinite(s["perplexity_before"]) and model.prompt_edits == []


def test_conflicting_new_objects(model):
    facts = known_facts(model, 3)
    clash = facts[0].with_new("Jupiter")
    report = evaluate(model, facts + [clash], method="in-context", mode="independent", **FAST)
    assert report.summary["n"] == 4 and report.summary["n_conflicting"] == 0
    report = evaluate(model, facts + [clash], method="in-context", mode="batch", **FAST)
    assert report.summary["n"] == 3 and report.summary["n_conflicting"] == 1


def test_methods_that_check_known_facts_are_not_asked_twice(model):
    """evaluate filters known facts itself, then tells methods that check again not to."""
    from workbench.editing import METHODS, SPECS, register_method
    from workbench.editing.incontext import in_context

    seen: dict[str, list] = {"checking": [], "plain": []}
    for name, checks in (("checking", True), ("plain", False)):
        if f"test-{name}" not in METHODS:
            @register_method(f"test-{name}", checks_known=checks)
            def method(model, facts, *, layers=None, _name=name, **kw):
                seen[_name].append(kw)
                return in_context(model, facts)
    assert SPECS["test-checking"].checks_known and not SPECS["test-plain"].checks_known
    assert all(SPECS[m].checks_known for m in ("rome", "memit", "pmet", "kn", "ft"))
    facts = known_facts(model, 2)
    evaluate(model, facts, method="test-checking", **FAST)
    evaluate(model, facts, method="test-plain", **FAST)
    assert seen["checking"] == [{"check_known": False}] * 2 and seen["plain"] == [{}] * 2
    # Without the filter, the method's own check stays on.
    evaluate(model, facts, method="test-checking", known_only=False, **FAST)
    assert seen["checking"][-1] == {}


def test_implication_rates_by_kind(model):
    """Each kind's rate is the share of that kind's prompts whose top-1 token begins the target."""
    import dataclasses

    from workbench.facts import Implication
    def top(prompt):
        return wb.probe(model, prompt, top_k=1)[0].top[0].token.strip()

    facts = []
    for fact in known_facts(model, 2):
        hop = f"The capital of the country where {fact.subject} is"
        lg = f"{fact.subject} is in the country of"
        wrong = "Zanzibar" if top(hop) != "Zanzibar" else "Quito"
        facts.append(dataclasses.replace(fact, implication_prompts=(
            Implication(hop, top(hop), "multi_hop"), Implication(hop, wrong, "multi_hop"),
            Implication(lg, top(lg), "logical_generalisation"))))
    before = score_fact(model, facts[0])
    assert before.implication_multi_hop == 0.5 and before.implication_logical_generalisation == 1.0
    assert before.implication_compositionality is None and before.implication == pytest.approx(2 / 3)
    report = evaluate(model, facts, method="in-context", **FAST)
    s = report.summary
    per_fact = report.values("implication_multi_hop_score")
    assert s["implication_multi_hop_score"] == pytest.approx(sum(per_fact) / 2)
    assert s["implication_compositionality_score"] is None
    assert s["counts"]["implication_multi_hop_score"] == 2 and s["counts"]["implication_compositionality_score"] == 0
    assert s["implication_multi_hop_score_before"] == 0.5
    assert "implication_multi_hop_score" in s["intervals"]
    from workbench.errors import DatasetError

    with pytest.raises(DatasetError, match="kind must be one of"):
        wb.read_facts([{"subject": "Paris", "prompt": "{} is in", "implication_prompts": [
            {"prompt": "x", "target": "y", "kind": "ripple"}]}])
