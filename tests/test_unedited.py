"""``unedited(model)``: the unedited model without reverting, and back bitwise after;
generation stops at end and special tokens."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.facts import Fact
from workbench.probing import _decode_until_stop, _stop_ids, generate_many

FACT = Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")


def _weights(model):
    return {k: v.clone() for k, v in model.hf_model.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_unedited_sets_weight_and_prompt_edits_aside_and_restores_them_bitwise(tiny_gemma):
    model = tiny_gemma
    original = _weights(model)
    before = wb.probe(model, FACT.text, targets=["Paris", "Rome"])[0]
    # Two weight edits on the same layer and a no-weight one: the oldest `before` is the original.
    wb.edit(model, FACT, method="ft", layers=[1], steps=3, check_known=False, min_prob=0)
    wb.edit(model, FACT.with_new("Berlin"), method="ft", layers=[1], steps=3, check_known=False, min_prob=0)
    wb.edit(model, FACT, method="in-context", min_prob=0)
    edited_weights = _weights(model)
    edited = wb.probe(model, FACT.text, targets=["Paris", "Rome"])[0]
    assert not _same(original, edited_weights)
    with wb.unedited(model) as m:
        assert m is model and _same(original, _weights(model))
        assert model.contextualize(FACT.text) == FACT.text
        inside = wb.probe(model, FACT.text, targets=["Paris", "Rome"])[0]
    assert [t.prob for t in inside.targets] == [t.prob for t in before.targets]
    assert _same(edited_weights, _weights(model))
    assert [t.prob for t in wb.probe(model, FACT.text, targets=["Paris", "Rome"])[0].targets] == \
        [t.prob for t in edited.targets]
    assert len(wb.active_edits(model)) == 3  # nothing was reverted
    wb.revert_all(model)
    assert _same(original, _weights(model))


def test_unedited_restores_after_an_error_and_sets_grace_aside(tiny_gemma):
    model = tiny_gemma
    before = wb.probe(model, FACT.text, targets=["Rome"])[0].target("Rome").prob
    wb.edit(model, FACT, method="grace", min_prob=0)
    edited = wb.probe(model, FACT.text, targets=["Rome"])[0].target("Rome").prob
    assert edited != before
    with pytest.raises(RuntimeError):
        with wb.unedited(model):
            assert wb.probe(model, FACT.text, targets=["Rome"])[0].target("Rome").prob == before
            raise RuntimeError("boom")
    assert wb.probe(model, FACT.text, targets=["Rome"])[0].target("Rome").prob == edited
    wb.revert_all(model)


def test_decoding_stops_at_the_first_stop_token(tiny_gemma):
    model = tiny_gemma
    stop = sorted(_stop_ids(model))[0]
    words = model.encode(" Rome, Italy", prompt=False)
    assert _decode_until_stop(model, [*words, stop, *words]) == model.tokenizer.decode(words)
    assert _decode_until_stop(model, words) == model.tokenizer.decode(words)


def test_greedy_generate_equals_generate_many_and_has_no_stop_tokens(tiny_gemma):
    model = tiny_gemma
    for prompt in ("Paris is", "The tallest mountain on the planet Earth is", "A B C D E F G"):
        text = wb.generate(model, prompt, max_new_tokens=12)
        assert text == generate_many(model, [prompt], max_new_tokens=12)[0]
        assert "<start_of_image>" not in text and "<eos>" not in text


@pytest.mark.slow
def test_gemma_generation_ends_instead_of_repeating_image_tokens(gemma):
    text = wb.generate(gemma, "The Colosseum is located in the city of", max_new_tokens=40)
    assert "Rome" in text and "<start_of_image>" not in text


def test_suggested_probes_come_from_the_bundled_data():
    from workbench.evaluation.suggest import suggest

    pool = wb.bundled_facts()
    # A typed copy of a bundled fact: no probes of its own.
    base = next(f for f in pool if f.prompt == "{} is located in the continent of") if any(
        f.prompt == "{} is located in the continent of" for f in pool) else pool[0]
    typed = Fact(base.subject, base.prompt, base.target_true, base.target_new)
    found = suggest(typed, pool)
    fact = found.fact
    from workbench.evaluation.relations import relation_of

    rid = relation_of(typed)
    templates = {f.prompt for f in pool if relation_of(f) == rid} - {typed.prompt}
    # Paraphrases: the relation's other templates, with this subject.
    assert fact.paraphrase_prompts and all(any(p.lower() == t.format(typed.subject).lower() or
                                               p.lower() == t.format("the " + typed.subject).lower()
                                               for t in templates) for p in fact.paraphrase_prompts)
    # Neighbours: this template, other subjects with the same true object in the bundled data.
    same = {f.subject for f in pool if relation_of(f) == rid and f.target_true.lower() == typed.target_true.lower()
            and f.subject.lower() != typed.subject.lower()}
    assert {p for p in fact.neighborhood_prompts} <= {typed.prompt.format(s) for s in same}
    assert len(fact.neighborhood_prompts) == min(3, len(same))
    assert len(found.notes) == 3 and fact.relation_id == rid
    # Kinds a fact has are kept as they are.
    own = Fact(typed.subject, typed.prompt, typed.target_true, typed.target_new, paraphrase_prompts=("mine",))
    assert suggest(own, pool).fact.paraphrase_prompts == ("mine",)


def test_a_city_that_is_a_capital_is_not_asked_for_its_capital():
    """"{} is the capital of" names the inverse of P36 (its subject is the city): its probes must not
    be the country-subject templates ("Paris's capital,"), and its question asks for the country."""
    from workbench.evaluation.relations import question_prompt, relation_of
    from workbench.evaluation.suggest import suggest

    typed = Fact("Paris", "{} is the capital of", "France", "Italy")
    assert relation_of(typed) == "P1376"
    assert relation_of(Fact("France", "{}'s capital,", "Paris", "Rome")) == "P36"
    assert relation_of(Fact("France", "The capital city of {} is", "Paris", "Rome")) == "P36"
    assert question_prompt(typed).endswith("Q: Which country is Paris the capital of?\nA:")
    found = suggest(typed)
    assert not any("capital," in p or "capital of Paris" in p for p in found.fact.paraphrase_prompts)
    assert found.fact.relation_id == "P1376" and "type paraphrases" in found.notes[0]


def test_generate_many_gives_way_within_a_token_when_cancelled(tiny_gemma):
    from workbench.runtime.progress import CancelToken, Cancelled

    class AfterSteps(CancelToken):
        """Set after HF has asked `cancelled` a few times (a click mid-generation)."""

        def __init__(self, n):
            super().__init__()
            self.asked, self.n = 0, n

        @property
        def cancelled(self):
            self.asked += 1
            if self.asked >= self.n:
                self.cancel()
            return super().cancelled

    token = AfterSteps(3)
    with pytest.raises(Cancelled):
        generate_many(tiny_gemma, ["Paris is", "Rome is"], max_new_tokens=200, cancel=token)
    assert token.asked == 3  # stopped at the third new token, not after 200
    # Not cancelled: the same text as without a token.
    assert generate_many(tiny_gemma, ["Paris is"], max_new_tokens=5, cancel=CancelToken()) == \
        generate_many(tiny_gemma, ["Paris is"], max_new_tokens=5)
