"""Memory that does not grow with the input (issue 43, item 5): scored positions keep only
what their scores need, inputs that scale are bounded with one-line refusals, and files
nested or sized to break a reader are refused before they are read whole.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import workbench as wb
from workbench import checks
from workbench.errors import DatasetError, WorkbenchError
from workbench.evaluation.perplexity import perplexity
from workbench.evaluation.scores import score_facts
from workbench.probing import UNEMBED_ROWS, run_sequences
from workbench.runtime import jsonfiles

FACT = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome",
               paraphrase_prompts=["Where is the Eiffel Tower? It is in"],
               neighborhood_prompts=["The Louvre is located in the city of", "Notre-Dame is in the city of"])


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, text
    return text


def _deep(n: int) -> str:
    return "[" * n + "]" * n


# -- scored positions keep their scores, not vocabulary rows ---------------------------------

def _slow_probe(model, prompt: str, target: str) -> tuple[float, int, list[int]]:
    """The obvious way: full logits of prompt + target, one run, no batching."""
    ids = model.tokens(model.contextualize(prompt))[0].tolist()
    tids = wb.probing.target_ids(model, prompt, target)
    with torch.no_grad():
        hidden = model.hidden(torch.tensor([ids + tids[:-1]], device=model.device))
        logp = model.logits_from_hidden(hidden[0]).float().log_softmax(-1).cpu()
    rows = logp[len(ids) - 1:]
    mean = float(rows[torch.arange(len(tids)), torch.tensor(tids)].mean())
    rank = int((rows[0] > rows[0, tids[0]]).sum()) + 1
    return mean, rank, rows[0].topk(3).indices.tolist()


def test_probe_keeps_the_same_numbers_as_full_rows(tiny_gemma):
    prompts = [FACT.text, "Paris is the capital of", "The Louvre is in"]
    result = wb.probe(tiny_gemma, prompts, targets=["Paris", "Rome", "a very long target phrase"], top_k=3)
    for prompt, res in zip(prompts, result):
        for target in ("Paris", "Rome", "a very long target phrase"):
            mean, rank, top = _slow_probe(tiny_gemma, prompt, target)
            got = res.target(target)
            assert got.logprob == pytest.approx(mean, abs=1e-4)
            assert got.rank == rank
        ids = [tiny_gemma.tokenizer.decode([i]) for i in top]
        assert [t.token for t in res.top] == ids


def test_no_vocabulary_row_outlives_its_batch(tiny_gemma, monkeypatch):
    """700 targets (two probe batches, each far over the row budget): rows are unembedded at
    most UNEMBED_ROWS at a time and none is kept. (3,000 targets showed nothing more and took a
    minute of the suite.)"""
    seen = []
    real = tiny_gemma.logits_from_hidden

    def counting(hidden, *args, **kwargs):
        seen.append(hidden.shape[0])
        return real(hidden, *args, **kwargs)

    monkeypatch.setattr(tiny_gemma, "logits_from_hidden", counting)
    targets = [f"word{i}" for i in range(700)]
    result = wb.probe(tiny_gemma, FACT.text, targets=targets, top_k=1, batch_size=512)
    assert len(result[0].targets) == 700 and max(seen) <= UNEMBED_ROWS and len(seen) > 2
    kept = run_sequences(tiny_gemma, [[2, 5, 7]] * 40, [[1, 2]] * 40, batch_size=40,
                         reduce=lambda i, logp: float(logp[0, 3]))
    assert all(isinstance(v, float) for v in kept)


def _full_rows(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        hidden = model.hidden(torch.tensor([ids], device=model.device))
        return model.logits_from_hidden(hidden[0]).float().log_softmax(-1).cpu()


def test_scores_and_perplexity_equal_the_full_row_computation(tiny_gemma):
    """NKL and perplexity from reduced values equal the obvious full-row computation."""
    from workbench.evaluation.perplexity import _context_and_text
    from workbench.evaluation.scores import bucket_kl

    model = tiny_gemma
    before = score_facts(model, [FACT], metrics=["teacher", "plus"])[0]
    with wb.edit(model, FACT, method="in-context", min_prob=0):
        after = score_facts(model, [FACT], references=[before], metrics=["teacher", "plus"])[0]
        slow = []
        for j, prompt in enumerate(FACT.neighborhood_prompts):
            ids = model.tokens(model.contextualize(prompt))[0].tolist()
            slow.append(bucket_kl(before.neighbor_next[j], _full_rows(model, ids)[-1]))
    assert len(after.neighbor_next) == len(FACT.neighborhood_prompts)
    assert after.nkl == pytest.approx(sum(slow) / len(slow), rel=1e-5) and after.nkl > 0
    text = "The tower stands in the middle of the old city and is visited often."
    ids, start = _context_and_text(model, text, 128)
    rows = _full_rows(model, ids)[start - 1 : len(ids) - 1]
    nll = -float(rows[torch.arange(len(ids) - start), torch.tensor(ids[start:])].double().sum())
    assert perplexity(model, texts=[text]) == pytest.approx(math.exp(nll / (len(ids) - start)), rel=1e-5)


def test_batched_rows_are_grouped_within_the_budget():
    from workbench.probing import _row_groups

    assert _row_groups([100, 100, 100, 300], budget=256) == [[0, 1], [2], [3]]
    assert _row_groups([1] * 600, budget=256) == [list(range(0, 256)), list(range(256, 512)), list(range(512, 600))]


# -- inputs that scale are bounded -----------------------------------------------------------

def test_a_fact_with_too_many_prompts_is_one_line(tmp_path):
    record = FACT.to_dict() | {"paraphrase_prompts": ["It is in"] * (checks.MAX_PROMPTS_PER_KIND + 1)}
    path = tmp_path / "many.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(DatasetError, match=r"record 0: paraphrase_prompts holds 1,001 prompts") as exc:
        wb.read_facts(path)
    _one_line(exc)


def test_a_very_long_object_is_refused_before_any_work():
    with pytest.raises(WorkbenchError, match=r"target_new is 18,000 characters long") as exc:
        wb.Fact("Eiffel Tower", "The {} is in", "Paris", "word " * 3600)
    _one_line(exc)


# -- files that would break a reader --------------------------------------------------------

def test_a_device_as_dataset_is_one_line():
    with pytest.raises(DatasetError, match="not a regular file") as exc:
        wb.read_facts("/dev/zero")
    _one_line(exc)


def test_an_oversized_dataset_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big.json"
    path.write_text(json.dumps([FACT.to_dict()] * 50))
    monkeypatch.setattr(jsonfiles.read_text_bounded, "__kwdefaults__", {"max_bytes": 1000})
    with pytest.raises(DatasetError, match=r"files of at most 0 MiB are read") as exc:
        wb.read_facts(path)
    _one_line(exc)


@pytest.mark.parametrize("layout", ["json", "json-lines", "nested-field"])
def test_a_deeply_nested_dataset_is_one_line(tmp_path, layout):
    path = tmp_path / "deep.json"
    if layout == "json":
        path.write_text(_deep(100_000))
    elif layout == "json-lines":
        path.write_text(json.dumps(FACT.to_dict()) + "\n" + _deep(100_000) + "\n")
    else:
        path.write_text(json.dumps([FACT.to_dict()])[:-2] + ', "extra": ' + _deep(500) + "}]")
    with pytest.raises(DatasetError, match="nests lists or objects") as exc:
        wb.read_facts(path)
    _one_line(exc)


def test_deep_records_given_as_python_objects_are_one_line():
    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(DatasetError, match="more than 64 levels"):
        wb.read_facts([FACT.to_dict() | {"extra": deep}])


def test_a_deeply_nested_report_to_resume_is_one_line(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(_deep(100_000))
    with pytest.raises(WorkbenchError, match="nests lists or objects") as exc:
        wb.read_report(path)
    _one_line(exc)


def test_deeply_nested_edit_metadata_is_one_line(tiny_gemma, tmp_path):
    with wb.edit(tiny_gemma, FACT, method="in-context", min_prob=0) as handle:
        handle.save(tmp_path / "ic")
    meta = tmp_path / "ic.safetensors.json"
    meta.write_text('{"format": "workbench-edit/1", "x": ' + _deep(100_000) + "}")
    with pytest.raises(WorkbenchError, match="nests lists or objects") as exc:
        wb.load_edit(tiny_gemma, tmp_path / "ic.safetensors")
    _one_line(exc)
    assert tiny_gemma.prompt_edits == []


def test_json_depth_walks_without_recursion():
    value: list = []
    for _ in range(50_000):
        value = [value]
    assert jsonfiles.json_depth(value) == jsonfiles.MAX_JSON_DEPTH + 1  # stops as soon as it is too deep
    assert jsonfiles.json_depth({"a": [1, {"b": 2}]}) == 3
