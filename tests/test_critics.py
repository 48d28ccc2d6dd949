"""The critics' measures: the judge, question forms, CounterFact+ and NKL, the letter test, intervals."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.errors import DatasetError, WorkbenchError
from workbench.evaluation import (
    EvalReport,
    evaluate,
    generated,
    intervals,
    judge,
    read_report,
    relations,
    score_fact,
)
from workbench.evaluation.scores import NKL_TOP, bucket_kl
from workbench.facts import ASSETS, read_facts
from workbench.probing import generate, generate_many

DATASETS = [ASSETS / "known_facts.json", ASSETS / "data" / "counterfact-edit-1k.json", ASSETS / "data" / "known_1000.json"]


# -- the judge ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, verdict", [
    (" Rome.", "new"),                                   # a plain match
    (" rome, the eternal city", "new"),                  # case
    (" the city of Rome, Italy. Paris is", "new"),       # the object later in the answer; the next sentence does not count
    (" Paris, not Rome.", "true"),                       # the object named first wins
    (" a tall iron tower", "neither"),
    (" Romeo and Juliet", "neither"),                    # whole words only
    ("\n\n Rome\nParis", "new"),                         # the first non-empty line
    (" It is in Paris. Rome is far away.", "true"),      # only the first sentence
])
def test_judge_on_hand_written_answers(text, verdict):
    assert judge.judge(text, new="Rome", true="Paris") == verdict


def test_judge_aliases_and_articles():
    # An alias from assets/aliases.json, and an object with a leading article.
    assert judge.judge(" the USA, in the south", new="United States", true="Canada") == "new"
    assert judge.judge(" Holland.", new="Japan", true="the Netherlands") == "true"
    assert judge.judge(" Netherlands", new="Japan", true="the Netherlands") == "true"
    # One object's name inside the other's: the longer one is meant.
    assert judge.judge(" New York City.", new="York", true="New York City") == "true"
    assert judge.judge(" São Paulo", new="Sao Paulo", true="Rio de Janeiro") == "new"


def test_letter_verdicts():
    assert judge.letter_verdict("From Rome with love; Paris next.", new="Rome", true="Paris") == "both"
    assert judge.letter_verdict("Nothing here.", new="Rome", true="Paris") == "neither"
    assert judge.letter_verdict("Lovely Paris", new="Rome", true="Paris") == "true"


def test_metrics_keyword_is_checked():
    assert generated.check_metrics(["letter"]) == ("teacher", "letter")
    assert generated.check_metrics("plus, generation") == ("teacher", "generation", "plus")
    with pytest.raises(WorkbenchError, match="unknown metric 'gen'"):
        generated.check_metrics("gen")


# -- relations and question forms -----------------------------------------------------------------
def test_every_dataset_relation_has_a_question():
    table = relations.relations()
    unresolved, agree, total = [], 0, 0
    for path in DATASETS:
        for f in read_facts(path):
            if f.relation_id is not None:
                assert f.relation_id in table, f"relation {f.relation_id} has no entry in assets/relations.json"
                total += 1
                agree += relations.relation_of(dataclasses.replace(f, relation_id=None)) == f.relation_id
            if relations.question_prompt(f) is None:
                unresolved.append(f.prompt)
    # "{}, the" (a position, a sport or an instrument) is the one template no pattern can place.
    assert set(unresolved) <= {"{}, the"}, sorted(set(unresolved))
    # The patterns alone name the record's own relation for most templates; the rest are templates
    # two relations share ("{} is developed by": developer or manufacturer), with near-identical questions.
    assert agree / total > 0.9


def test_question_and_letter_prompts():
    f = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
    assert relations.question_prompt(f).endswith("Q: Where is the Eiffel Tower located?\nA:")
    assert all("the Eiffel Tower" in p for p in relations.letter_prompts(f))
    assert all("located" not in p for p in relations.letter_prompts(f))


def test_related_letter_prompts_are_about_the_object_of_its_kind():
    f = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
    place = relations.related_letter_prompts(f)
    assert place[0] == "Dear Anna, greetings from my trip to Rome! Today I"
    assert all("Paris" in p for p in relations.related_letter_prompts(f, "true"))
    assert all("Eiffel" not in p for p in place)  # the subject is what the letter should bring up
    car = wb.Fact("BMW E23", "{}, developed by", "BMW", "Suzuki")
    assert relations.related_letter_prompts(car)[0] == "Dear Anna, I have been reading about Suzuki all week."
    with pytest.raises(WorkbenchError, match="which"):
        relations.related_letter_prompts(f, "old")
    with pytest.raises(WorkbenchError, match="no new object"):
        relations.related_letter_prompts(wb.Fact("Eiffel Tower", "The {} is located in", "Paris"))
    # Every relation names an object kind the letters have prompts for.
    kinds = {r.object for r in relations.relations().values()}
    assert kinds <= {"place", "person", "thing"} and "place" in kinds


def test_related_letters_count_the_subject_in_letters_about_each_object(tiny_gemma, monkeypatch):
    f = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
    scores = score_fact(tiny_gemma, f, metrics="related")
    rows = scores.related_letters
    assert [r["about"] for r in rows] == ["new"] * 6 + ["true"] * 6
    assert scores.related_new == sum(r["mentions_subject"] for r in rows[:6]) / 6
    assert all(r["mentions_subject"] == judge.mentions(r["text"], "Eiffel Tower") for r in rows)
    # Made-up texts: the share is what the judge counts.
    monkeypatch.setattr(generated, "cached_texts", lambda m, ps, **kw: [
        " we saw the Eiffel Tower." if "Rome" in p else " nothing." for p in ps])
    fields = generated.measure(tiny_gemma, [f], ("teacher", "related"))[0]
    assert fields["related_new"] == 1.0 and fields["related_true"] == 0.0
    assert "related" in generated.METRICS and "related" not in generated.DEFAULT_METRICS  # slow: asked for


def test_damaged_relations_file_is_named(tmp_path, monkeypatch):
    bad = tmp_path / "relations.json"
    bad.write_text('{"relations": {"P1": {"name": "x"}}}')
    monkeypatch.setattr(relations, "RELATIONS_FILE", bad)
    relations._table.cache_clear()
    try:
        with pytest.raises(DatasetError, match="relations.json is damaged"):
            relations.relations()
    finally:
        monkeypatch.undo()
        relations._table.cache_clear()


# -- intervals ------------------------------------------------------------------------------------
def test_bootstrap_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = intervals.bootstrap(list(rng.random(25) < 0.6))
    large = intervals.bootstrap(list(rng.random(400) < 0.6))
    for iv in (small, large):
        assert iv.lo <= iv.mean <= iv.hi
    assert large.half_width < small.half_width / 2     # ~1/sqrt(n): 4x narrower for 16x the facts
    assert intervals.bootstrap([1, 0, 1]) == intervals.bootstrap([1, 0, 1])   # fixed seed
    assert intervals.bootstrap([None, None]) is None
    assert intervals.bootstrap([0.5]) == intervals.Interval(0.5, 0.5, 0.5, 1)


def test_bootstrap_matches_the_normal_approximation():
    """For a mean of 400 coin flips the percentile interval is close to mean ± 1.96·sd/√n."""
    x = [1] * 240 + [0] * 160
    iv = intervals.bootstrap(x, samples=4000)
    se = math.sqrt(0.6 * 0.4 / 400)
    assert abs(iv.half_width - 1.96 * se) < 0.01


def test_paired_difference_needs_the_same_facts():
    d = intervals.paired_difference([1, 1, 0, None], [0, 1, 0, 1])
    assert d.n == 3 and d.mean == pytest.approx(1 / 3)
    with pytest.raises(WorkbenchError, match="not the same facts"):
        intervals.paired_difference([1], [1, 0])


# -- NKL ------------------------------------------------------------------------------------------
def test_bucket_kl_is_the_kl_or_a_lower_bound():
    torch.manual_seed(0)
    p, q = torch.randn(50).log_softmax(-1), torch.randn(50).log_softmax(-1)
    full = float((p.exp() * (p - q)).sum())
    everything = p.topk(50)
    assert bucket_kl((everything.indices.tolist(), everything.values.tolist()), q) == pytest.approx(full, rel=1e-5)
    top = p.topk(10)
    assert 0 < bucket_kl((top.indices.tolist(), top.values.tolist()), q) <= full
    assert bucket_kl((top.indices.tolist(), top.values.tolist()), p) == pytest.approx(0.0, abs=1e-7)


# -- reports --------------------------------------------------------------------------------------
def test_reports_from_before_the_critics_measures_still_load():
    old = read_report(ASSETS / "results" / "rome_sequential.json")
    assert old.values("gen_efficacy")[0] is None and old.interval("gen_efficacy") is None
    assert old.interval("efficacy_score").mean == pytest.approx(old.summary["efficacy_score"])
    from workbench.evaluation.evaluate import _summarise

    summary = _summarise(old.rows)          # an old report summarised by today's code
    assert summary["gen_efficacy"] is None and "efficacy_score" in summary["intervals"]


# -- on models ------------------------------------------------------------------------------------
def test_generate_many_equals_one_prompt_at_a_time(tiny_gemma):
    prompts = ["Paris is", "The tallest mountain on the planet Earth is", "Hello", "A B C D E F G"]
    many = generate_many(tiny_gemma, prompts, max_new_tokens=6, batch_size=3)   # padded batches
    assert many == [generate_many(tiny_gemma, [p], max_new_tokens=6)[0] for p in prompts]
    for p, text in zip(prompts, many):
        # Both stop at the first end, special or control token.
        assert generate(tiny_gemma, p, max_new_tokens=6) == text


def test_evaluate_reports_every_new_measure_with_intervals(tiny_llama, tmp_path):
    from tests.test_evaluation import FAST, known_facts

    facts = known_facts(tiny_llama, n=3)
    report = evaluate(tiny_llama, facts, method="in-context", **FAST)
    s = report.summary
    for key in ("gen_efficacy", "gen_paraphrase", "gen_neighborhood", "neighborhood_plus",
                "gen_neighborhood_plus", "nkl", "gen_efficacy_neither"):
        assert s[key] is not None, key
        lo, hi = s["intervals"][key]
        assert lo <= s[key] <= hi
    assert s["letter_new"] is None                       # not asked for
    assert report.settings["metrics"] == ["teacher", "generation", "question", "plus"]
    row = report.rows[0]
    assert {g["kind"] for g in row.after["generations"]} >= {"rewrite", "paraphrase", "neighborhood", "neighborhood_plus"}
    # Saved and loaded, the report is the same; its per-fact generations come along.
    path = tmp_path / "r.json"
    report.to_json(path)
    again = read_report(path)
    assert again.summary == json.loads(json.dumps(s))
    assert again.rows[0].after["generations"] == row.after["generations"]
    assert isinstance(EvalReport.from_dict(report.to_dict()), EvalReport)
    # Teacher only: the new fields are there, empty.
    plain = evaluate(tiny_llama, facts[:1], method="in-context", metrics="teacher", **FAST)
    assert plain.summary["gen_efficacy"] is None and plain.rows[0].after["generations"] == []


def test_letter_metric_counts_continuations(tiny_llama, monkeypatch):
    from tests.test_evaluation import known_facts

    monkeypatch.setenv("WORKBENCH_TEXT_CACHE", "0")   # the seed, not the kept texts, must repeat them
    fact = known_facts(tiny_llama, n=1)[0]
    s = score_fact(tiny_llama, fact, metrics=["letter"])
    assert len(s.letters) == 3 * generated.LETTER_SAMPLES
    assert s.letter_new + s.letter_true + s.letter_both + s.letter_neither == pytest.approx(1.0)
    assert s.gen_efficacy is None
    again = score_fact(tiny_llama, fact, metrics=["letter"])
    assert [x["text"] for x in again.letters] == [x["text"] for x in s.letters]   # fixed seed


def test_compare_gives_paired_differences(tiny_llama):
    from tests.test_evaluation import FAST, known_facts

    table = wb.compare(tiny_llama, known_facts(tiny_llama, n=3), methods=["in-context", "retrieval"],
                       metrics="teacher,plus", **FAST)
    diff = table.differences("neighborhood_plus")
    assert list(diff["method"]) == ["retrieval"] and diff["n"][0] == 3
    assert diff["lo"][0] <= diff["difference"][0] <= diff["hi"][0]
    with pytest.raises(WorkbenchError, match="not a per-fact rate"):
        table.differences("perplexity_after")


@pytest.mark.slow
def test_unedited_known_fact_generates_its_true_object(gemma):
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome",
                   neighborhood_prompts=["The Louvre is located in the city of"])
    s = score_fact(gemma, fact)
    assert s.gen_efficacy == 0.0
    rewrite = next(g for g in s.generations if g["kind"] == "rewrite")
    assert rewrite["verdict"] == "true" and "Paris" in rewrite["text"]


@pytest.mark.slow
def test_rome_edit_is_said_and_nkl_measures_it(gemma):
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome",
                   neighborhood_prompts=["The Louvre is located in the city of",
                                         "Notre-Dame de Paris is located in the city of"])
    before = score_fact(gemma, fact, metrics="teacher,generation,plus")
    # A retrieval edit changes no weights and does not rewrite prompts about other subjects.
    h = wb.edit(gemma, fact, method="retrieval")
    assert all(gemma.contextualize(p) == p for p in fact.neighborhood_prompts)
    assert score_fact(gemma, fact, reference=before, metrics="plus").nkl == 0.0
    h.revert()
    h = wb.edit(gemma, fact, method="rome")
    after = score_fact(gemma, fact, reference=before, metrics="teacher,generation,plus")
    rewrite = next(g for g in after.generations if g["kind"] == "rewrite")
    assert rewrite["verdict"] == "new" and "Rome" in rewrite["text"]
    assert after.nkl > 0
    # The kept top tokens are nearly all the mass: the bucketed KL is the full KL to within 1 %.
    ids = gemma.tokens(fact.neighborhood_prompts[0])
    with torch.no_grad():
        q = gemma.hf_model(ids).logits[0, -1].float().log_softmax(-1)
    h.revert()
    with torch.no_grad():
        p = gemma.hf_model(ids).logits[0, -1].float().log_softmax(-1)
    full = float((p.exp() * (p - q)).sum())
    top = p.topk(NKL_TOP)
    assert bucket_kl((top.indices.tolist(), top.values.tolist()), q) == pytest.approx(full, rel=0.01)


def test_cli_evaluate_metrics(tmp_path, capsys):
    from tests.test_evaluation import known_facts
    from workbench.cli import main

    data, out = tmp_path / "facts.json", tmp_path / "out.json"
    wb.write_facts(known_facts(wb.load_model("tiny-llama"), 2), data)
    common = ["evaluate", "--method", "in-context", "--dataset", str(data), "--model", "tiny-llama",
              "--every", "2", "--perplexity-texts", "2", "--fluency-tokens", "4", "--json", str(out), "--overwrite"]
    assert main(common + ["--metrics", "teacher,plus"]) == 0
    summary = json.loads(out.read_text())
    assert summary["neighborhood_plus"] is not None and summary["gen_efficacy"] is None
    lo, hi = summary["intervals"]["neighborhood_plus"]
    assert lo <= summary["neighborhood_plus"] <= hi
    # A misspelt metric fails before the model loads, and names the choices.
    assert main(common + ["--metrics", "teacher,letters"]) == 2
    assert "unknown metric 'letters'" in capsys.readouterr().err
