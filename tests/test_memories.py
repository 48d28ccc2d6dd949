"""FFN memories, key search, key contexts and interventions."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.figures.memories import sub_update_bars
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


# -- how much each sub-update pushes the answer (issue 41) --------------------------------------
def _slow_direct_push(model, prompt, layer, position, answer_id, vector=None):
    """The FFN update's (or ``vector``'s) direct push on the answer's logit, the obvious way.

    An RMS final norm maps the final residual x to gain * x / rms(x), so its output divided
    by x, dimension by dimension, is the scale it applies to anything added to x. A
    LayerNorm (OLMo's, without parameters) does the same to the centred x and centred c.
    None of the tiny families (nor Gemma) has a bias in its final norm.
    """
    roles = model.roles
    mlp, final = roles.hook("mlp", layer), roles.hook("resid", model.n_layers - 1)
    acts = residuals(model, model.tokens(prompt), [mlp, final])
    x = acts[final][position]
    ln = model.bridge.ln_final
    name = type(getattr(ln, "original_component", None) or getattr(ln, "_original_component", ln)).__name__
    centred = "LayerNorm" in name and "RMS" not in name
    assert centred == (model.hf_model.config.model_type == "olmo"), name

    def centre(v):
        return v - v.mean() if centred else v

    with torch.no_grad():
        per_dim = model.bridge.ln_final(x).double() / centre(x.double())
    row = model.hf_model.get_output_embeddings().weight[answer_id].detach().double()
    vector = acts[mlp][position] if vector is None else vector
    return float((per_dim * centre(vector.double())) @ row)


@pytest.mark.parametrize("name", ["tiny_gemma", "tiny_llama", "tiny_olmo", "tiny_phi3"])
def test_answer_pushes_add_up_to_the_ffn_direct_push(name, request):
    model = request.getfixturevalue(name)
    for layer, position in [(1, -1), (model.n_layers - 1, 3)]:
        r = memories(model, PROMPT, layer=layer, position=position, top_k=model.d_mlp, answer="Paris")
        assert len(r.sub_updates) == model.d_mlp and r.answer == model.tokenizer.decode([r.answer_id])
        slow = _slow_direct_push(model, PROMPT, layer, position, r.answer_id)
        pushes = [u.answer_push for u in r.sub_updates]
        size = sum(abs(p) for p in pushes)
        assert sum(pushes) + r.bias_answer_push == pytest.approx(slow, rel=1e-4, abs=1e-5 * size)
        assert r.ffn_answer_push == pytest.approx(slow, rel=1e-4, abs=1e-5 * size)
        assert abs(r.bias_answer_push) < 1e-4 * size  # these families have no FFN output bias
        assert size > 0 and max(abs(p) for p in pushes) > 1e-6


@pytest.mark.parametrize("name", ["tiny_gemma", "tiny_llama"])
def test_each_answer_push_is_its_sub_update_read_directly(name, request):
    model = request.getfixturevalue(name)
    layer, position = 2, -1
    r = memories(model, PROMPT, layer=layer, position=position, top_k=5, answer="Paris")
    roles = model.roles
    names = [roles.hook("ffn_out", layer), roles.hook("mlp", layer)]
    acts = residuals(model, model.tokens(PROMPT), names)
    ffn_out, mlp = (acts[n][position].double() for n in names)
    values = roles.value_vectors(model.bridge, layer).detach().double()
    for u in r.sub_updates:
        # The post-FFN norm (Gemma's) scales each dimension of the whole FFN output by mlp / ffn_out;
        # without one the ratio is 1.
        into_residual = mlp / ffn_out * (u.coefficient * values[u.key])
        slow = _slow_direct_push(model, PROMPT, layer, position, r.answer_id, into_residual)
        assert u.answer_push == pytest.approx(slow, rel=1e-3, abs=1e-7)


@pytest.mark.slow
def test_answer_pushes_on_the_default_model(gemma):
    from workbench.locate.memories import answer_pushes

    layer = 15
    r = memories(gemma, PROMPT, layer=layer, top_k=10)
    assert r.answer == " Paris"  # the model's own answer, as the true object would give
    full = answer_pushes(gemma, PROMPT, layer=layer, answer="Paris")
    slow = _slow_direct_push(gemma, PROMPT, layer, -1, r.answer_id)
    assert float(full.sum()) + r.bias_answer_push == pytest.approx(slow, rel=1e-4, abs=1e-4)
    assert r.ffn_answer_push == pytest.approx(slow, rel=1e-4, abs=1e-4)
    # Measured: one key (1650, whose value promotes capital cities) carries most of it, +2.8 of +2.7.
    best = r.ranked("answer_push")[0]
    assert best.answer_push == pytest.approx(float(full.max()), rel=1e-6) and best.answer_push > 1.0


def test_answer_defaults_to_the_models_top_token_and_pushes_match_the_full_vector(tiny_gemma):
    from workbench.locate.memories import answer_pushes

    r = memories(tiny_gemma, PROMPT, layer=1, top_k=6)
    top = int(tiny_gemma.logits(tiny_gemma.tokens(PROMPT))[0, -1].argmax())
    assert r.answer_id == top
    full = answer_pushes(tiny_gemma, PROMPT, layer=1)
    assert full.shape == (tiny_gemma.d_mlp,)
    assert [u.answer_push for u in r.sub_updates] == pytest.approx([float(full[u.key]) for u in r.sub_updates])
    assert float(full.sum()) + r.bias_answer_push == pytest.approx(r.ffn_answer_push, rel=1e-4, abs=1e-6)
    assert "answer_push" in r.to_pandas().columns
    with pytest.raises(WorkbenchError, match="empty"):
        memories(tiny_gemma, PROMPT, layer=1, answer=" ")


def test_ranked_sorts_by_weight_or_push(tiny_llama):
    r = memories(tiny_llama, PROMPT, layer=0, top_k=12, answer="Paris")
    assert r.ranked() == r.sub_updates
    pushes = [u.answer_push for u in r.ranked("answer_push")]
    assert pushes == sorted(pushes, reverse=True)
    assert {u.key for u in r.ranked("answer_push")} == {u.key for u in r.sub_updates}
    with pytest.raises(WorkbenchError, match="cannot sort sub-updates by 'size'"):
        r.ranked("size")


@pytest.mark.parametrize("width", [7, 8])
def test_frozen_norm_is_the_norm_with_its_scale_held_fixed(width):
    """A LayerNorm (odd and even width) and an RMS norm: the frozen map is linear and gives
    the norm's own output on the point it was frozen at (less the bias)."""
    from workbench.locate.memories import frozen_norm

    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(width)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2.0)
        ln.bias.uniform_(-1.0, 1.0)
    rms_weight = torch.rand(width) + 0.5

    def rms(v):  # Gemma's convention: (1 + w) * v / rms(v)
        return (1 + rms_weight) * v / (v.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()

    x, a, b = torch.randn(3, width) * 3
    for norm, bias in ((ln, ln.bias.detach()), (rms, torch.zeros(width))):
        read = frozen_norm(norm, x)
        assert torch.allclose(read(x) + bias.double(), norm(x).detach().double(), atol=1e-5)
        assert torch.allclose(read(a) + read(b), read(a + b), atol=1e-6)
    # By definition for the LayerNorm: gain * (c - mean c) / sqrt(var x + eps).
    expected = ln.weight.double() * (a - a.mean()).double() / (x.double().var(unbiased=False) + ln.eps).sqrt()
    assert torch.allclose(frozen_norm(ln, x)(a), expected.detach(), atol=1e-5)


def test_chart_rows_follow_the_sort_and_the_token_filter(tiny_gemma):
    from workbench.figures.memories import shown_tokens

    r = memories(tiny_gemma, PROMPT, layer=1, top_k=15, answer="Paris")
    for by in ("weight", "answer_push"):
        for only_readable in (True, False):
            fig = sub_update_bars(r, by=by, only_readable=only_readable)
            bar = fig.data[0]
            ranked = r.ranked(by)
            assert [int(row[0]) for row in bar.customdata] == [u.key for u in ranked]
            assert list(bar.x) == pytest.approx([getattr(u, by) for u in ranked])
            labels = [f"key {u.key}: " + ", ".join(repr(t.token) for t in shown_tokens(u.promotes, 3,
                                                                                      only_readable=only_readable))
                      for u in ranked]
            assert list(bar.y) == labels
            # Not clipped: first row on top, every row a category, room for each, labels sized by plotly.
            assert fig.layout.yaxis.autorange == "reversed" and fig.layout.yaxis.automargin
            assert len(set(bar.y)) == len(ranked) and fig.layout.height >= 22 * len(ranked) + 150


# -- the panel --------------------------------------------------------------------------------
FACT_TEXT = ("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")


@pytest.fixture
def panel(tiny_gemma):
    pytest.importorskip("ipywidgets")
    from workbench.facts import Fact
    from workbench.ui import Workbench

    app = Workbench(tiny_gemma, fact=Fact(*FACT_TEXT), facts=[Fact(*FACT_TEXT)], background=False)
    p = app.memories
    p.layer.value = 1
    p.top_k.value = 10
    p.show_button.click()
    assert p.error.value == "", p.error.text
    return p


def _table_keys(panel):
    width = 7
    return [int(c.description) for c in panel.table.children[width::width]]


def test_panel_table_and_chart_show_the_same_rows_in_the_same_order(panel):
    from workbench.figures.memories import shown_tokens
    from workbench.ui.memories import COLUMN_HELP
    from workbench.ui.widgets import quoted

    heads = [c.value for c in panel.table.children[:7]]
    assert "pushes &#x27; Paris&#x27; by" in heads[5] or "pushes ' Paris' by" in heads[5]
    assert "read out directly at this position" in COLUMN_HELP["pushes"] and "directly at this position" in heads[5]
    for by in ("answer_push", "weight"):
        panel.sort.value = by
        ranked = [u.key for u in panel.report.ranked(by)]
        chart = panel.chart.children[0].data[0]
        assert _table_keys(panel) == [int(row[0]) for row in chart.customdata] == ranked
        shown = [float(c.value) for c in panel.table.children[7 + 5::7]]
        assert shown == pytest.approx([u.answer_push for u in panel.report.ranked(by)], abs=1e-3)
        if by == "answer_push":
            assert shown == sorted(shown, reverse=True)
    # The readable filter is the table's and the chart's alike.
    for only_readable in (False, True):
        panel.readable_only.value = only_readable
        ranked = panel.report.ranked("weight")
        chart = panel.chart.children[0].data[0]
        tokens = [shown_tokens(u.promotes, 6, only_readable=only_readable) for u in ranked]
        assert [c.value for c in panel.table.children[7 + 4::7]] == [" ".join(quoted(t.token) for t in ts) for ts in tokens]
        assert list(chart.y) == [f"key {u.key}: " + ", ".join(repr(t.token) for t in ts[:3]) for u, ts in zip(ranked, tokens)]
    # The toggles still find their key in the new layout.
    key = _table_keys(panel)[0]
    panel.set_change(key, "suppress")
    assert panel.changes == {key: "suppress"} and "Re-probed" in panel.effect.value


def test_panel_says_what_the_subject_carries_and_what_the_push_means(panel):
    import html

    from workbench.figures.memories import readable
    from workbench.ui.widgets import quoted

    r = panel.enriched
    text = panel.carries.value
    assert "What the subject's representation carries here" in text and "after layer 1" in text
    first = next(t for t in r.top[1] if readable(t))
    assert html.escape(quoted(first)) in text
    assert f"Attribute rate {r.rate[1]:.0%}" in text and "Paris" in text  # the true object counts
    assert "at this last token" in panel.notes.value and "attention heads" in panel.notes.value
    # At the subject's last token the push is what it would add if read out there.
    panel.position.value = r.position
    panel.show_button.click()
    assert panel.report.position == r.position
    assert "would add to the logit" in panel.notes.value and "not the last token" in panel.notes.value
    assert panel.enriched is r  # read once per fact
