"""Loading, role map, facts, probing: the foundation everything stands on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import workbench as wb
from workbench.errors import DatasetError, UnknownModelError, WorkbenchError
from workbench.facts import ASSETS
from workbench.probing import probe, target_ids

EIFFEL = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")


# -- facts -----------------------------------------------------------------------------

def test_fact_validation():
    assert EIFFEL.text == "The Eiffel Tower is located in the city of"
    with pytest.raises(WorkbenchError, match="exactly once"):
        wb.Fact("Eiffel Tower", "The Eiffel Tower is in", "Paris")
    with pytest.raises(WorkbenchError, match="subject is empty"):
        wb.Fact(" ", "{} is in", "Paris")
    with pytest.raises(WorkbenchError, match="target_new is empty"):
        wb.Fact("X", "{} is in", "Paris", "")
    with pytest.raises(WorkbenchError, match="equals target_true"):
        wb.Fact("X", "{} is in", "Paris", " Paris")


@pytest.mark.parametrize(
    "source, fmt",
    [("counterfact-edit-1k.json", "easyedit"), ("known_1000.json", "known_1000")],
)
def test_readers_detect_format(source, fmt):
    from workbench.facts import detect_format

    records = json.loads((ASSETS / "data" / source).read_text())
    assert detect_format(records[0]) == fmt
    facts = wb.read_facts(records)
    assert len(facts) == len(records)
    assert all(f.subject in f.text for f in facts)


def test_rome_counterfact_format_and_roundtrip(tmp_path):
    record = {
        "case_id": 0,
        "requested_rewrite": {
            "prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
            "target_new": {"str": "English"}, "target_true": {"str": "French"}, "relation_id": "P103",
        },
        "paraphrase_prompts": ["Danielle Darrieux spoke the language"],
        "neighborhood_prompts": ["Michel Rocard is a native speaker of"],
        "generation_prompts": ["Danielle Darrieux's mother tongue is"],
        "implication_prompts": [{"prompt": "Danielle Darrieux was raised speaking", "target": "English"}],
    }
    (fact,) = wb.read_facts([record])
    assert fact.target_new == "English" and fact.relation_id == "P103"
    assert fact.implication_prompts[0].target == "English"
    path = tmp_path / "facts.json"
    wb.write_facts([fact], path)
    assert wb.read_facts(path) == [fact]


def test_bad_datasets_name_record_and_field(tmp_path):
    bad = [{"prompt": "A is in", "subject": "A", "target_new": "x", "ground_truth": "y"},
           {"prompt": "B is in", "subject": "B", "target_new": "", "ground_truth": "y"}]
    with pytest.raises(DatasetError, match="record 1: field 'target_new'"):
        wb.read_facts(bad)
    with pytest.raises(DatasetError, match="record 0: field 'prompt' does not contain the subject"):
        wb.read_facts([{"prompt": "Z is in", "subject": "A", "target_new": "x", "ground_truth": "y"}])
    with pytest.raises(DatasetError, match="no known format"):
        wb.read_facts([{"foo": 1}])
    with pytest.raises(DatasetError, match="empty"):
        wb.read_facts([])
    broken = tmp_path / "broken.json"
    broken.write_text("[{not json")
    with pytest.raises(DatasetError, match="not JSON"):
        wb.read_facts(broken)
    with pytest.raises(DatasetError, match="cannot read"):
        wb.read_facts(tmp_path / "missing.json")


def test_bundled_datasets_load():
    facts = wb.bundled_facts()
    assert len(facts) >= 300
    assert all(f.target_new and f.target_true for f in facts)


# -- models ------------------------------------------------------------------------------

def test_unknown_model_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnknownModelError, match="cannot load model 'no-such/model-xyz'"):
        wb.load_model("no-such/model-xyz")
    with pytest.raises(UnknownModelError, match="no config.json"):
        wb.load_model("/tmp")


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_llama", "tiny_olmo", "tiny_phi3"])
def test_tiny_models_and_roles(fixture, request):
    model = request.getfixturevalue(fixture)
    assert model.n_layers == 4
    tokens = model.tokens("The Eiffel Tower is located in the city of")
    _, cache = model.bridge.run_with_cache(tokens)
    for layer in range(model.n_layers):
        keys = cache[model.roles.hook("ffn_keys", layer)]
        values = model.roles.value_vectors(model.bridge, layer)
        assert values.shape == (model.d_mlp, model.d_model)
        out = cache[model.roles.hook("ffn_out", layer)]
        torch.testing.assert_close(keys @ values, out, atol=1e-5, rtol=1e-5)
        added = model.roles.ffn_to_residual(model.bridge, layer, out)
        torch.testing.assert_close(added, cache[model.roles.hook("mlp", layer)], atol=1e-5, rtol=1e-5)
    with pytest.raises(WorkbenchError, match="out of range"):
        model.layer_index(model.n_layers)


def test_tiny_model_is_deterministic(tiny_llama):
    again = wb.load_model("tiny-llama")
    assert again.fingerprint == tiny_llama.fingerprint


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_llama"])
def test_the_bridge_keeps_a_tokenizer_that_already_adds_bos(fixture, request):
    """Gemma's tokenizer prepends BOS, so the bridge keeps it instead of loading it again; a
    tokenizer that does not (Llama's here) gets the bridge's own, as before. Either way the
    bridge tokenizes as a fresh ``add_bos_token=True`` tokenizer would."""
    from transformers import AutoTokenizer

    from workbench.core.loading import converted_dir

    model = request.getfixturevalue(fixture)
    source = "gemma-3-270m" if fixture == "tiny_gemma" else "smollm2-135m"
    fresh = AutoTokenizer.from_pretrained(converted_dir(source), add_bos_token=True)
    assert (model.bridge.tokenizer is model.tokenizer) == (fixture == "tiny_gemma")
    for text in ("The Eiffel Tower is located in", " Paris\n\nDear Anna,"):
        assert model.bridge.tokenizer(text)["input_ids"] == fresh(text)["input_ids"]
        assert model.bridge.to_tokens(text)[0].tolist() == fresh(text)["input_ids"]


def test_the_non_finite_check_agrees_with_looking_at_every_element():
    from workbench.core.loading import non_finite_parameter

    def slow(module):
        return next((n for n, p in module.named_parameters() if not torch.isfinite(p).all()), None)

    layer = torch.nn.Linear(64, 64, dtype=torch.float16)
    assert non_finite_parameter(layer) is None and slow(layer) is None
    with torch.no_grad():
        layer.weight.fill_(60_000.0)  # finite, but its sum overflows float16: the exact look decides
        assert non_finite_parameter(layer) is None and slow(layer) is None
        for bad in (float("nan"), float("inf"), -float("inf")):
            layer.weight[3, 5] = bad
            assert non_finite_parameter(layer) == slow(layer) == "weight"
        layer.weight.fill_(0.0)
        layer.bias[0] = float("nan")
        assert non_finite_parameter(layer) == slow(layer) == "bias"


def test_hidden_matches_bridge_logits(tiny_gemma):
    tokens = tiny_gemma.tokens("Hello world, this is a test")
    full = tiny_gemma.logits(tokens)
    with torch.no_grad():
        last = tiny_gemma.logits_from_hidden(tiny_gemma.hidden(tokens)[:, -1])
    torch.testing.assert_close(last, full[:, -1], atol=1e-5, rtol=1e-5)


# -- probing -------------------------------------------------------------------------------

PROMPTS = [
    "The Eiffel Tower is located in the city of", "Steve Jobs founded", "BMW is based in",
    "Michael Jordan plays the sport of", "The capital of Japan is",
]


def _batched_equals_single(model):
    targets = ["Paris", " Munich", "basketball game"]
    batched = probe(model, PROMPTS, targets=targets, top_k=3)
    for i, prompt in enumerate(PROMPTS):
        single = probe(model, prompt, targets=targets, top_k=3, batch_size=1)[0]
        for a, b in zip(single.targets, batched[i].targets):
            assert abs(a.prob - b.prob) <= 1e-5
            assert abs(a.logprob - b.logprob) <= 1e-5 * max(1.0, abs(a.logprob))
        assert [t.token for t in single.top] == [t.token for t in batched[i].top]
        assert abs(single.top[0].prob - batched[i].top[0].prob) <= 1e-5


def test_probe_batched_equals_one_at_a_time_tiny(tiny_gemma):
    _batched_equals_single(tiny_gemma)


def test_probe_target_prob_is_mean_token_logprob(tiny_llama):
    """Check the CounterFact convention against a slow, obvious computation."""
    prompt, target = "The capital of France is", "Paris Hilton"
    ids = tiny_llama.encode(prompt)
    tids = target_ids(tiny_llama, prompt, target)
    assert len(tids) >= 2
    logps = []
    for j, tid in enumerate(tids):
        seq = torch.tensor([ids + tids[:j]])
        logits = tiny_llama.logits(seq)[0, -1].float()
        logps.append(float(logits.log_softmax(-1)[tid]))
    got = probe(tiny_llama, prompt, targets=[target])[0].targets[0]
    assert got.logprob == pytest.approx(sum(logps) / len(logps), abs=1e-5)
    assert got.prob == pytest.approx(float(torch.tensor(got.logprob).exp()), rel=1e-6)


def test_probe_leading_space_and_bad_targets(tiny_gemma):
    a = probe(tiny_gemma, "I live in", targets=["Paris"])[0].targets[0]
    b = probe(tiny_gemma, "I live in", targets=[" Paris"])[0].targets[0]
    assert a.logprob == pytest.approx(b.logprob, abs=1e-6)
    with pytest.raises(WorkbenchError, match="empty target"):
        probe(tiny_gemma, "I live in", targets=[""])
    with pytest.raises(WorkbenchError, match="empty prompt"):
        probe(tiny_gemma, "")


def test_prompt_edits_are_applied_by_probe(tiny_gemma):
    class Prefix:
        def rewrite(self, prompt):
            return "Paris is lovely. " + prompt

    plain = probe(tiny_gemma, "I live in", targets=["Paris"])[0].targets[0].prob
    tiny_gemma.prompt_edits.append(Prefix())
    try:
        edited = probe(tiny_gemma, "I live in", targets=["Paris"])[0].targets[0].prob
    finally:
        tiny_gemma.prompt_edits.clear()
    assert edited != plain


# -- CLI ---------------------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, timeout=600,
    )


def test_cli_probe_json_tiny():
    out = _cli("probe", "The Eiffel Tower is in", "Hello", "--target", "Paris", "--model", "tiny-llama", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["model"] == "tiny-llama"
    assert [p["prompt"] for p in data["prompts"]] == ["The Eiffel Tower is in", "Hello"]
    first = data["prompts"][0]
    assert len(first["top"]) == 5 and set(first["top"][0]) == {"token", "prob"}
    assert set(first["targets"][0]) == {"target", "prob", "logprob"}


def test_cli_errors_are_one_line_exit_2():
    out = _cli("probe", "Hello", "--model", "no-such/model-xyz")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert "cannot load model" in out.stderr


# -- the real offline models ----------------------------------------------------------------------

@pytest.mark.slow
def test_gemma_knows_eiffel_tower(gemma):
    result = probe(gemma, EIFFEL.text, targets=["Paris", "Rome"])[0]
    assert result.top[0].token == " Paris"
    assert result.target("Paris").prob > 0.5 > result.target("Rome").prob


@pytest.mark.slow
def test_gemma_probe_batched_equals_single(gemma):
    _batched_equals_single(gemma)


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["gemma", "smollm"])
def test_ffn_is_sum_of_key_value_products_real_models(fixture, request):
    model = request.getfixturevalue(fixture)
    tokens = model.tokens(EIFFEL.text)
    _, cache = model.bridge.run_with_cache(tokens)
    for layer in range(model.n_layers):
        keys = cache[model.roles.hook("ffn_keys", layer)]
        values = model.roles.value_vectors(model.bridge, layer)
        out = cache[model.roles.hook("ffn_out", layer)]
        # Accumulate in float64 so the check measures the decomposition, not float32 summation order.
        recon = (keys.double() @ values.double()).float()
        assert (recon - out).abs().max().item() <= 1e-5 * max(1.0, out.abs().max().item())


@pytest.mark.slow
def test_smollm_knows_eiffel_tower(smollm):
    assert probe(smollm, EIFFEL.text)[0].top[0].token == " Paris"


@pytest.mark.slow
def test_filter_known_reports_dropped(gemma):
    facts = [EIFFEL, wb.Fact("Eiffel Tower", "The {} is located in the city of", "Tokyo")]
    kept = wb.filter_known(gemma, facts)
    assert kept == [EIFFEL] and len(kept.dropped) == 1
    assert "skipped 1" in kept.summary


@pytest.mark.slow
def test_generate_greedy_continues_sensibly(gemma):
    text = wb.generate(gemma, "The Eiffel Tower is located in", max_new_tokens=6)
    assert "Paris" in text


@pytest.mark.parametrize("fixture", ["tiny_gemma", "tiny_llama"])
def test_cached_generation_matches_recomputation(fixture, request):
    """The KV-cache path (used by generate) gives the same next-token logits as a full pass."""
    model = request.getfixturevalue(fixture)
    ids = model.tokens("The Eiffel Tower is located in")
    with torch.no_grad():
        first = model.hf_model(ids, use_cache=True)
        nxt = first.logits[:, -1].argmax(-1, keepdim=True)
        cached = model.hf_model(nxt, past_key_values=first.past_key_values, use_cache=True).logits[0, -1]
        full = model.hf_model(torch.cat([ids, nxt], 1), use_cache=False).logits[0, -1]
    torch.testing.assert_close(cached, full, atol=1e-4, rtol=1e-4)


def test_fingerprint_ignores_where_the_weights_came_from(tiny_llama, tmp_path):
    """A saved edit must load on another machine: the fingerprint depends on weights and
    architecture, not on the cache folder the config was read from."""
    from workbench.core.model import _fingerprint

    config = tiny_llama.hf_model.config
    before = _fingerprint("x", tiny_llama.hf_model)
    old = getattr(config, "_name_or_path", None)
    config._name_or_path = str(tmp_path / "elsewhere")
    try:
        assert _fingerprint("x", tiny_llama.hf_model) == before
    finally:
        config._name_or_path = old
