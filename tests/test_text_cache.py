"""The unedited model's texts kept on disk: read back only for the same model, prompts,
settings and code, never for an edited model, and sampled again when an entry is unreadable."""

from __future__ import annotations

import json

import pytest

import workbench as wb
from workbench.evaluation import generated, text_cache
from workbench.probing import generate_many

SETTINGS = dict(max_new_tokens=6, do_sample=True, top_k=5, seed=0)
PROMPTS = ["Dear Anna, the Eiffel Tower", "Dear Anna, the Eiffel Tower", "My friend wrote about Paris"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    monkeypatch.delenv("WORKBENCH_TEXT_CACHE", raising=False)
    return tmp_path


def _count_sampling(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = text_cache.generate_many

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(text_cache, "generate_many", counted)
    return calls


def test_the_second_call_reads_the_texts_the_first_sampled(tiny_llama, cache, monkeypatch):
    calls = _count_sampling(monkeypatch)
    first = text_cache.cached_texts(tiny_llama, PROMPTS, **SETTINGS)
    again = text_cache.cached_texts(tiny_llama, PROMPTS, **SETTINGS)
    assert again == first and len(calls) == 1
    assert first == generate_many(tiny_llama, PROMPTS, **SETTINGS)  # what sampling gives
    # Other settings or prompts in another order are another entry (a text depends on its batch).
    text_cache.cached_texts(tiny_llama, PROMPTS, **{**SETTINGS, "seed": 1})
    text_cache.cached_texts(tiny_llama, PROMPTS[::-1], **SETTINGS)
    assert len(calls) == 3
    assert len(list(cache.glob("texts/*/*.json"))) == 3


def test_an_edited_model_is_always_sampled(tiny_llama, cache, monkeypatch):
    from tests.test_evaluation import known_facts

    fact = known_facts(tiny_llama, n=1)[0]
    calls = _count_sampling(monkeypatch)
    handle = wb.edit(tiny_llama, fact, method="in-context", min_prob=0)
    try:
        text_cache.cached_texts(tiny_llama, PROMPTS, **SETTINGS)
        text_cache.cached_texts(tiny_llama, PROMPTS, **SETTINGS)
    finally:
        handle.revert()
    assert len(calls) == 2 and not list(cache.glob("texts/*/*.json"))


def test_an_unreadable_or_foreign_entry_is_sampled_again(tiny_llama, cache, monkeypatch):
    first = text_cache.cached_texts(tiny_llama, PROMPTS, **SETTINGS)
    (path,) = cache.glob("texts/*/*.json")
    calls = _count_sampling(monkeypatch)
    path.write_text("{ not json")
    assert text_cache.cached_texts(tiny_llama, PROMPTS, **SETTINGS) == first
    path.write_text(json.dumps({"prompts": ["other"], "texts": ["x"]}))
    assert text_cache.cached_texts(tiny_llama, PROMPTS, **SETTINGS) == first
    assert len(calls) == 2
    assert json.loads(path.read_text())["texts"] == first      # mended on the way


def test_switched_off_it_neither_reads_nor_writes(tiny_llama, cache, monkeypatch):
    monkeypatch.setenv("WORKBENCH_TEXT_CACHE", "0")
    calls = _count_sampling(monkeypatch)
    text_cache.cached_texts(tiny_llama, PROMPTS, **SETTINGS)
    text_cache.cached_texts(tiny_llama, PROMPTS, **SETTINGS)
    assert len(calls) == 2 and not list(cache.glob("texts/*/*.json"))


def test_letters_judge_the_kept_texts_again(tiny_llama, cache, monkeypatch):
    from tests.test_evaluation import known_facts

    fact = known_facts(tiny_llama, n=1)[0]
    first = generated.letter_test(tiny_llama, [fact])[0]
    monkeypatch.setattr(generated, "letter_verdict", lambda text, **kw: "neither")
    again = generated.letter_test(tiny_llama, [fact])[0]
    assert [r["text"] for r in again] == [r["text"] for r in first]
    assert {r["verdict"] for r in again} == {"neither"}


def test_greedy_answers_are_kept_too(tiny_llama, cache, monkeypatch):
    calls = _count_sampling(monkeypatch)
    first = text_cache.cached_texts(tiny_llama, PROMPTS, max_new_tokens=4)
    assert text_cache.cached_texts(tiny_llama, PROMPTS, max_new_tokens=4) == first and len(calls) == 1
    assert first == generate_many(tiny_llama, PROMPTS, max_new_tokens=4)
    # Greedy texts ignore the seed; sampled ones are another entry.
    text_cache.cached_texts(tiny_llama, PROMPTS, max_new_tokens=4, seed=3)
    text_cache.cached_texts(tiny_llama, PROMPTS, max_new_tokens=4, do_sample=True, top_k=5)
    assert len(calls) == 2


def test_an_unusable_cache_only_warns(tiny_llama, tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("WORKBENCH_CACHE", str(blocked))
    monkeypatch.delenv("WORKBENCH_TEXT_CACHE", raising=False)
    with caplog.at_level("WARNING"):
        texts = text_cache.cached_texts(tiny_llama, PROMPTS, **SETTINGS)
    assert texts == generate_many(tiny_llama, PROMPTS, **SETTINGS)
    assert "generating without it" in caplog.text


def test_the_view_shows_a_fact_picked_again_at_once_and_as_the_measure_sampled_it(tiny_llama, cache, monkeypatch):
    from tests.test_evaluation import known_facts
    from workbench.evaluation.relations import letter_prompts
    from workbench.ui import knowledge

    fact = known_facts(tiny_llama, n=1)[0]
    measured = [r["text"] for r in generated.letter_test(tiny_llama, [fact])[0]]
    calls, shown = [], []
    monkeypatch.setattr(knowledge, "generate_many", lambda *a, **k: calls.append(1) or [])
    prompts = knowledge.sample_prompts(letter_prompts(fact))
    assert knowledge.generate_letters(tiny_llama, prompts, on_text=shown.append) == measured
    assert not calls and shown == [measured]       # read, not sampled, and drawn at once
