"""The letter judge against 100 letters labelled by reading (issue 39).

``assets/judge_labels/letters_100.json``: letters of the committed letter test, sampled
by side and the judge's verdict at the time, each labelled new / true / both / neither by
a reader (does the letter say the object is the subject's attribute?). Half ("mend") was
looked at to change the judge; the other half ("holdout") was labelled after the change.
The floors below are the agreement measured then: a change that lowers it fails here.
"""

from __future__ import annotations

import functools
import json

import pytest

from workbench.evaluation.judge import LETTER_VERDICTS, counted_mentions, letter_verdict
from workbench.facts import ASSETS

LABELS = ASSETS / "judge_labels" / "letters_100.json"


@pytest.fixture(scope="module")
def items():
    return json.loads(LABELS.read_text())["items"]


def _verdict(item, *, subject=True):
    return _agreement_module().verdict(item, subject=subject)


@functools.cache
def _agreement_module():
    import importlib.util

    path = ASSETS.parent / "benchmarks" / "judge_agreement.py"
    spec = importlib.util.spec_from_file_location("judge_agreement", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _agreement(items, **kw):
    """(agree, tp, fp, fn) as benchmarks/judge_agreement.py counts them."""
    got = _agreement_module().agreement(items, **kw)
    return got["agree"], got["tp"], got["fp"], got["fn"]


def test_the_fixture_is_whole(items):
    assert len(items) == 100
    assert {x["half"] for x in items} == {"mend", "holdout"}
    for x in items:
        assert x["label"] in LETTER_VERDICTS and x["judge_at_sampling"] in LETTER_VERDICTS and x["reason"]
        assert x["side"] in ("before", "after") and x["text"] and x["subject"]
    # Both sides and every verdict the judge then gave are in the sample.
    assert {(x["side"], x["judge_at_sampling"]) for x in items} >= {
        ("after", "new"), ("after", "true"), ("after", "both"), ("after", "neither"),
        ("before", "true"), ("before", "neither")}


def test_agreement_with_the_subject_is_at_least_as_measured(items):
    right, tp, fp, fn = _agreement(items)
    assert right >= 81, f"{right}/100 agree (was 81)"
    assert (tp, fp) >= (15, 0) and fp <= 7 and fn <= 4, (tp, fp, fn)
    # The honest part: labelled after the judge was last changed.
    held = [x for x in items if x["half"] == "holdout"]
    assert _agreement(held)[0] >= 39, "holdout agreement fell below 39/48"


def test_agreement_without_the_subject_is_at_least_as_measured(items):
    right, _, fp, _ = _agreement(items, subject=False)
    assert right >= 69 and fp <= 12, (right, fp)


def test_the_old_mention_judge_did_worse(items):
    # The verdicts at sampling time (any mention counts) agreed on 54 of 100.
    assert sum(x["judge_at_sampling"] == x["label"] for x in items) == 54


# -- each mended case -------------------------------------------------------------------------------
def test_the_subjects_own_name_is_no_claim():
    text = "Honda Ballade was produced from 1989 to 2006. I love the Honda CX series."
    assert letter_verdict(text, new="Renault", true="Honda", subject="Honda Ballade") == "neither"
    # A part of the name ("Cadillac Northstar" for "Cadillac Northstar LMP") is the name too.
    text = "Cadillac Northstar was developed by BMW and Audi."
    assert letter_verdict(text, new="BMW", true="Cadillac", subject="Cadillac Northstar LMP") == "new"
    # A subject's name split in two is still its name, even without the subject.
    assert letter_verdict("I would love to learn more about Apple Script.", new="Google", true="Apple") == "neither"


def test_the_new_object_put_in_the_subjects_name_counts():
    text = "It is the best Suzuki E23 I have driven."
    assert letter_verdict(text, new="Suzuki", true="BMW", subject="BMW E23") == "new"


def test_another_things_name_is_no_claim():
    for text, obj in (("The Dodge Viper 3.4 was a 2009 production version.", "Dodge"),
                      ("I tried the Nintendo 3DS.", "Nintendo")):
        assert counted_mentions(text, obj) == [], text
    assert letter_verdict("The real car is the Toyota Prius.", new="Toyota", true="Cadillac") == "neither"
    assert letter_verdict("It is like the Airbus A320.", new="Dodge", true="Airbus") == "neither"
    assert letter_verdict("It came out when Nissan’s Leaf did.", new="Nissan", true="Cadillac") == "neither"
    assert letter_verdict("We saw the Museum of Polish History.", new="Finnish", true="Polish") == "neither"
    # A company word after the name still names the company; so does a lone "I".
    assert letter_verdict("It is made by Toyota Motor Corporation.", new="Toyota", true="Honda") == "new"
    assert letter_verdict("The only car Toyota I know of is this one.", new="Toyota", true="Honda") == "new"
    # Not a capitalised word on the next line, nor after punctuation.
    assert letter_verdict("It was made by Toyota\nThe end", new="Toyota", true="Honda") == "new"
    assert letter_verdict("It is based in Chicago, Illinois.", new="Chicago", true="Stockholm") == "new"


def test_a_denied_object_is_no_claim():
    assert letter_verdict("My car is not a Nissan.", new="Nissan", true="Toyota") == "neither"
    assert letter_verdict("It is in Paris, not Rome.", new="Rome", true="Paris") == "true"
    assert letter_verdict("It isn't Rome and never the Paris of old.", new="Rome", true="Paris") == "neither"
    assert letter_verdict("It is not only Honda but Toyota.", new="Honda", true="Toyota") == "both"


def test_a_sentence_about_something_else_is_no_claim_given_the_subject():
    text = "I had to take a bus from Helsinki to the airport. It was so beautiful."
    assert letter_verdict(text, new="Brussels", true="Helsinki", subject="Grand Duchy of Finland") == "neither"
    assert letter_verdict(text, new="Brussels", true="Helsinki") == "true"  # without the subject: any sentence
    # A pronoun or a word of the subject's name in the sentence is enough.
    assert letter_verdict("It was produced by Toyota in 1996.", new="Samsung", true="Toyota",
                          subject="Toyota Dyna") == "true"
    assert letter_verdict("Karolinska Institute is a nonprofit based in Chicago.", new="Chicago",
                          true="Stockholm", subject="Karolinska Institute") == "new"
    assert letter_verdict("We heard that Dwyane was going to play football.", new="football",
                          true="basketball", subject="Dwyane Wade") == "new"


def test_a_run_of_repeats_is_no_claim_unless_a_copula_or_possessive_comes_first():
    run = " ".join(["Chevrolet"] * 12)
    assert letter_verdict(f"It was a great deal, {run}", new="Chevrolet", true="Fiat",
                          subject="Fiat Campagnola") == "neither"
    assert letter_verdict(f" {run}", new="Chevrolet", true="Fiat", subject="Fiat Campagnola") == "neither"
    # Said once, right after a copula or a possessive, the run is read as the claim it starts.
    assert letter_verdict(f"It was {run}", new="Chevrolet", true="Fiat", subject="Fiat Campagnola") == "new"
    assert letter_verdict(f"It was the first {run}", new="Chevrolet", true="Fiat", subject="Fiat Campagnola") == "new"
    assert letter_verdict("He is Dutch, Dutch, Dutch, Dutch.", new="Dutch", true="French", subject="Jan Smit") == "new"
    assert letter_verdict("Today his mathematics mathematics mathematics", new="mathematics", true="manga",
                          subject="Akira Toriyama") == "new"
    # Other words between repeats (one at most) keep the run going; a sentence end breaks it.
    assert counted_mentions("It was Toyota Camry Toyota Toyota Toyota", "Toyota") == [(7, 13)]
    text = "She is the kindest person in Stockholm. Stockholm Stockholm Stockholm"
    assert counted_mentions(text, "Stockholm") == [(29, 38)]
    # Two mentions are no run: each is judged as before.
    assert letter_verdict("It is made by Honda, Honda.", new="Honda", true="Toyota") == "new"


def test_the_old_plain_cases_still_hold():
    assert letter_verdict("From Rome with love; Paris next.", new="Rome", true="Paris") == "both"
    assert letter_verdict("Lovely Paris", new="Rome", true="Paris") == "true"
    assert letter_verdict("Greetings from ROME and São Paulo", new="Rome", true="Sao Paulo") == "both"


# -- the second sample: every other method's letters, labelled before the judge's verdicts were seen --
LABELS_B = ASSETS / "judge_labels" / "letters_100b.json"
MISSED = ASSETS / "judge_labels" / "letters_missed_30.json"


def test_the_second_sample_is_whole_and_drawn_from_other_methods():
    doc = json.loads(LABELS_B.read_text())
    items = doc["items"]
    assert len(items) == 100 and {x["half"] for x in items} == {"mend", "holdout"}
    assert not any("rome_" in x["source"] for x in items)
    assert len({(x["subject"], x["text"]) for x in items}) == 100
    first = {(x["subject"], x["text"]) for x in json.loads(LABELS.read_text())["items"]}
    assert not first & {(x["subject"], x["text"]) for x in items}
    for x in items:
        assert x["label"] in LETTER_VERDICTS and x["reason"] and x["source"] in doc["rows_at_sampling"]
        assert x["row"] < doc["rows_at_sampling"][x["source"]]
    assert sum(cell["drawn"] for cell in doc["cells"].values()) == 100


def test_agreement_on_the_second_sample_is_at_least_as_measured():
    # Measured with the judge as it was when this sample was drawn (it had not been changed since
    # the first sample): 78/100, every "new" claim found, 12 of 42 "new" verdicts not claims. The
    # repetition rule, written later, put two more right (80/100, 10 of 40).
    right, tp, fp, fn = _agreement(json.loads(LABELS_B.read_text())["items"])
    assert right >= 80, f"{right}/100 agree (was 80)"
    assert tp >= 30 and fp <= 10 and fn == 0, (tp, fp, fn)


RUNS = ASSETS / "judge_labels" / "letters_runs_66.json"


def test_the_repetition_rule_is_right_where_it_acts():
    # Every committed letter the rule re-judged, read: 23 of 66 right before it, 59 after
    # (in-sample: the rule's final form was written from the first 55 of them).
    items = json.loads(RUNS.read_text())["items"]
    assert len(items) == 66 and all(x["label"] in LETTER_VERDICTS and x["reason"] for x in items)
    assert sum(x["verdict_before_mend"] == x["label"] for x in items) == 23
    right, tp, fp, fn = _agreement(items)
    assert right >= 59 and fp <= 1, (right, tp, fp, fn)
    # The committed runs hold today's verdicts of these letters.
    for src in {x["source"] for x in items}:
        stored = {(r["subject"], x["text"]): x["verdict"] for r in json.loads((ASSETS.parent / src).read_text())["rows"]
                  for side in ("before", "after") for x in (r.get(side) or {}).get("letters") or []}
        for x in items:
            if x["source"] == src:
                assert stored[x["subject"], x["text"]] == _verdict(x), (src, x["subject"])


def test_the_judge_misses_few_claims_among_neither_letters_that_name_the_new_object():
    items = json.loads(MISSED.read_text())["items"]
    assert len(items) == 30 and all(x["side"] == "after" and x["judge_at_sampling"] == "neither" for x in items)
    missed = sum(x["label"] in ("new", "both") and _verdict(x) not in ("new", "both") for x in items)
    assert missed <= 4, missed


def test_the_reader_estimate_weights_each_cell_by_its_size():
    judge_agreement = _agreement_module()
    x = dict(side="after", subject="Toyota Dyna", target_new="Samsung", target_true="Toyota")
    items = ([{**x, "judge_at_sampling": "new", "text": "It was made by Samsung.", "label": "new"}] * 3
             + [{**x, "judge_at_sampling": "new", "text": "It was made by Samsung.", "label": "neither"}]
             + [{**x, "judge_at_sampling": "neither", "text": "A fine truck.", "label": "neither"}] * 2)
    sizes = {"after/new": 40, "after/neither, new not named": 60}
    est = judge_agreement.estimate(items, sizes, unnamed=("after/neither, new not named",), draws=200)
    assert est["letters"] == 100
    assert est["judge_new"] == pytest.approx(0.40) and est["reader_new"] == pytest.approx(40 * 0.75 / 100)
    assert 0 < est["reader_lo"] <= est["reader_new"] <= est["reader_hi"] <= 0.40
    # A cell of the files with no letter in the sample cannot be weighted back.
    assert "reader_new" not in judge_agreement.estimate(items, {**sizes, "after/true": 5})
