"""FFN memories, key search, key contexts and interventions."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.locate.interventions import intervene, suppress
from workbench.locate.keycontexts import key_profile, top_contexts
from workbench.locate.lens import residuals
from workbench.locate.memories import find_keys, memories, sub_updates, value_logits

PROMPT = "The Eiffel Tower is located in the city of"


def _ffn_out(model, prompt, layer, position):
    name = model.roles.hook("ffn_out", layer)
    return residuals(model, model.tokens(prompt), [name])[name][position]


def _check_sum(model, layer, position):
    total = sub_updates(model, PROMPT, layer=layer, position=position).double().sum(0)
    ffn = _ffn_out(model, PROMPT, layer, position).double()
    assert (total - ffn).abs().max() < 1e-5


@pytest.mark.parametrize("name", ["tiny_gemma", "tiny_llama", "tiny_olmo", "tiny_phi3"])
def test_sub_updates_sum_to_ffn_output(name, request):
    model = request.getfixturevalue(name)
    for layer, position in [(0, -1), (model.n_layers - 1, 2)]:
        _check_sum(model, layer, position)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma", "smollm"])
def test_sub_updates_sum_real_models(name, request):
    model = request.getfixturevalue(name)
    _check_sum(model, model.n_layers // 2, -1)
    report = memories(model, PROMPT, layer=-2, top_k=5)
    # SmolLM2's last FFN outputs have norm ~240-470: the model's own float32 matmul
    # rounds at ~1e-7 of that (2-4e-5 absolute), so the check there is relative.
    assert report.reconstruction_error < 1e-6 * max(1.0, report.ffn_norm)


def test_memories_report(tiny_gemma):
    r = memories(tiny_gemma, PROMPT, layer=-1, top_k=7)
    assert len(r.sub_updates) == 7 and r.layer == tiny_gemma.n_layers - 1
    weights = [u.weight for u in r.sub_updates]
    assert weights == sorted(weights, reverse=True)
    u = r.sub_updates[0]
    assert u.weight == pytest.approx(abs(u.coefficient) * u.value_norm, rel=1e-5)
    # Promoted tokens are the signed value vector's top projections.
    logits = value_logits(tiny_gemma, r.layer, [u.key])[0] * (1 if u.coefficient >= 0 else -1)
    assert u.promotes[0].id == int(logits.argmax())
    assert r.reconstruction_error < 1e-5 and 0 < r.top_weight_share <= 1
    assert json.loads(r.to_json())["sub_updates"][0]["key"] == u.key
    assert len(r.to_pandas()) == 7


def test_bad_input(tiny_llama):
    with pytest.raises(WorkbenchError, match="layer 9 is out of range"):
        memories(tiny_llama, PROMPT, layer=9)
    with pytest.raises(WorkbenchError, match="position 99 is out of range"):
        memories(tiny_llama, PROMPT, layer=0, position=99)
    with pytest.raises(WorkbenchError, match="key 256 is out of range"):
        key_profile(tiny_llama, 0, tiny_llama.d_mlp)
    with pytest.raises(WorkbenchError, match="key -1 is out of range"):
        with intervene(tiny_llama, {0: {-1: 0.0}}):
            pass
    with pytest.raises(WorkbenchError, match="empty"):
        find_keys(tiny_llama, " ")


def test_find_keys(tiny_gemma):
    r = find_keys(tiny_gemma, "Paris", top_k=5)
    assert len(r.keys) == 5 and r.token == " Paris"
    scores = [k.score for k in r.keys]
    assert scores == sorted(scores, reverse=True)
    best = r.keys[0]
    # The search score is the token's logit in the key's value direction (softcap aside).
    logit = value_logits(tiny_gemma, best.layer, [best.key])[0, r.token_id]
    assert float(logit) == pytest.approx(best.score, rel=1e-3, abs=1e-5)


def test_intervene_changes_and_cleans_up(tiny_llama):
    model = tiny_llama
    layer = 1
    keys = list(range(model.d_mlp))
    with suppress(model, {layer: keys}):
        assert _ffn_out(model, PROMPT, layer, -1).abs().max() == 0
    before = _ffn_out(model, PROMPT, layer, -1)
    with pytest.raises(RuntimeError):
        with intervene(model, {layer: {3: 5.0, 4: ("scale", 2.0)}}, position=-1):
            name = model.roles.hook("ffn_keys", layer)
            acts = residuals(model, model.tokens(PROMPT), [name])[name]
            assert acts[-1, 3] == 5.0
            raise RuntimeError("boom")
    # Nothing stays hooked, also after an exception.
    assert all(not hp._forward_hooks for hp in model.bridge.hook_dict.values())
    assert torch.equal(_ffn_out(model, PROMPT, layer, -1), before)


def test_key_profile_and_cache(tiny_gemma, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    p = key_profile(tiny_gemma, 1, 5, prompt=PROMPT, n_texts=6, max_tokens=24, top_n=3)
    assert len(p.prompt_activations) == len(p.prompt_tokens) > 0
    assert len(p.contexts) == 3 and len(p.negative_contexts) == 3
    acts = [c.activation for c in p.contexts]
    assert acts == sorted(acts, reverse=True)
    # The stored activation is what the key really does at that corpus position.
    from workbench.corpus import wiki_texts
    from workbench.locate.memories import key_coefficients

    c = p.contexts[0]
    ids = tiny_gemma.encode(wiki_texts("stats", limit=6)[c.text_index])[:24]
    real = key_coefficients(tiny_gemma, torch.tensor([ids]), [1])[1][c.position, 5]
    assert float(real) == pytest.approx(c.activation, abs=1e-5)
    assert list(tmp_path.rglob("*layer001.pt"))
    again = top_contexts(tiny_gemma, 1, n_texts=6, max_tokens=24, top_n=3)[1]
    assert again.top_values[5, 0] == pytest.approx(acts[0])


def test_figure(tiny_gemma):
    from workbench.figures.memories import sub_update_bars

    fig = sub_update_bars(memories(tiny_gemma, PROMPT, layer=0, top_k=4))
    assert len(fig.data[0].y) == 4
