"""Causal tracing and activation patching: the fast path equals the obvious one,
hooks never leak, bad input fails clearly, results serialise and plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.locate import AIEResult, TraceResult, average_indirect_effect, trace
from workbench.locate.aie import token_groups
from workbench.locate.cells import window_layers
from workbench.locate.patching import patch, patch_reference
from workbench.locate.reference import trace_reference
from workbench.locate.spans import subject_span
from workbench.runtime.progress import Cancelled, CancelToken

FACT = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WORKBENCH_PROGRESS", "0")


@pytest.fixture(scope="module", params=["tiny-gemma3", "tiny-llama"])
def tiny(request):
    return wb.load_model(request.param)


def _hooks_left(model) -> list[str]:
    left = [name for name, hp in model.bridge.hook_dict.items() if hp._forward_hooks or getattr(hp, "fwd_hooks", None)]
    left += [f"blocks.{i} pre-hook" for i, b in enumerate(model.bridge.blocks) if b._forward_pre_hooks]
    return left


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.nanmax(np.abs(a - b)) / np.nanmax(np.abs(b)))


# tiny-olmo and tiny-phi3 have no entry in architecture.FAMILIES: the default roles must trace exactly too.
@pytest.mark.parametrize("tiny", ["tiny-gemma3", "tiny-llama", "tiny-olmo", "tiny-phi3"], indirect=True)
def test_fast_trace_equals_reference(tiny):
    # float32 named: "auto" takes bfloat16 on a CPU that has it natively (test_bfloat16_* covers that path).
    fast = trace(tiny, FACT, samples=3, window=3, precision="float32")
    ref = trace_reference(tiny, FACT, samples=3, window=3)
    for kind in ("resid", "mlp", "attn"):
        assert fast.scores[kind].shape == (len(fast.tokens), tiny.n_layers)
        # Measured 1.0-1.1e-6 on all four families (float32 rounding of differently shaped products).
        assert _rel_diff(fast.scores[kind], ref[kind]) < 1e-5, kind
    assert not _hooks_left(tiny)


def test_fast_patch_equals_reference(tiny):
    clean = "The Eiffel Tower is located in the city of"
    corrupt = "The Eiffel Tower is located in the land of"
    fast = patch(tiny, clean, corrupt, window=2)
    ref = patch_reference(tiny, clean, corrupt, window=2)
    for kind in fast.scores:
        assert _rel_diff(fast.scores[kind], ref[kind]) < 1e-4, kind
    assert fast.method == "patch"
    assert fast.subject_range[1] - fast.subject_range[0] == 1
    # restoring the whole last block output at the last token gives the clean answer back
    assert fast.scores["resid"][-1, -1] == pytest.approx(fast.clean_prob, rel=1e-4)


def test_trace_restoring_last_state_recovers_clean(tiny):
    r = trace(tiny, FACT, kinds="resid", samples=2)
    assert r.scores["resid"][-1, -1] == pytest.approx(r.clean_prob, rel=1e-4)
    begin = r.subject_range[0]
    # cells before the subject see no noise: exactly the corrupted baseline
    assert np.all(r.scores["resid"][:begin] == r.corrupted_prob)


def test_cancel_and_interrupt_leave_no_hooks(tiny):
    ids = tiny.tokens(FACT.text)
    before = tiny.logits(ids)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        trace(tiny, FACT, samples=2, cancel=token)
    assert not _hooks_left(tiny)

    calls = {"n": 0}

    def boom(module, args, output):
        calls["n"] += 1
        if calls["n"] == 3:  # inside a restored run, restore hooks attached
            raise KeyboardInterrupt

    handle = tiny.bridge.blocks[-1].register_forward_hook(boom)
    try:
        with pytest.raises(KeyboardInterrupt):
            trace(tiny, FACT, kinds="mlp", samples=2, window=2)
    finally:
        handle.remove()
    assert not _hooks_left(tiny)
    assert torch.equal(tiny.logits(ids), before)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"samples": 0}, "samples"),
        ({"window": 0}, "window"),
        ({"kinds": "mlps"}, "unknown kind"),
        ({"noise": -1.0}, "noise"),
    ],
)
def test_bad_settings(tiny, kwargs, match):
    with pytest.raises(WorkbenchError, match=match):
        trace(tiny, FACT, **kwargs)


def test_subject_missing_and_long_prompt(tiny):
    with pytest.raises(WorkbenchError, match="not in the prompt.*tokens"):
        trace(tiny, ("The Colosseum is located in the city of", "Eiffel Tower"))
    with pytest.raises(WorkbenchError, match="context"):
        trace(tiny, ("Paris " * (tiny.n_ctx + 5), "Paris"))
    with pytest.raises(WorkbenchError, match="subject"):
        trace(tiny, "The Eiffel Tower is in")
    with pytest.raises(WorkbenchError, match="same length"):
        patch(tiny, "The Eiffel Tower is in", "The Colosseum, in Rome, is in")


def test_subject_span_leading_space_variants(tiny):
    text = FACT.text
    ids = tiny.encode(text)
    span = subject_span(tiny, ids, text, "Eiffel Tower")
    assert subject_span(tiny, ids, text, " Eiffel Tower") == span
    assert subject_span(tiny, ids, text, "Eiffel Tower ") == span
    covered = "".join(tiny.str_tokens(ids[span[0] : span[1]]))
    assert "Eiffel Tower" in covered
    # a subject at the very start of the prompt
    text2 = "Eiffel Tower stands in"
    ids2 = tiny.encode(text2)
    s2 = subject_span(tiny, ids2, text2, "Eiffel Tower")
    assert "Eiffel" in "".join(tiny.str_tokens(ids2[s2[0] : s2[1]]))


def test_windows_and_groups():
    assert window_layers(0, 10, 18) == (0, 5)
    assert window_layers(9, 10, 18) == (4, 14)
    assert window_layers(17, 10, 18) == (12, 18)
    assert window_layers(3, 1, 18) == (3, 4)
    g = token_groups([1, 4], 9)
    assert g["first subject token"] == [1] and g["middle subject tokens"] == [2] and g["last subject token"] == [3]
    assert g["first subsequent token"] == [4] and g["further tokens"] == [5, 6, 7] and g["last token"] == [8]
    one = token_groups([2, 3], 4)
    assert one["middle subject tokens"] == [] and one["further tokens"] == [] and one["first subsequent token"] == []


def test_result_serialises_and_plots(tiny):
    r = trace(tiny, FACT, samples=2, window=2)
    d = json.loads(r.to_json())
    for key in ("tokens", "subject_range", "answer", "clean_prob", "corrupted_prob", "scores", "seconds", "indirect_effects"):
        assert key in d
    back = TraceResult.from_dict(d)
    np.testing.assert_allclose(back.scores["mlp"], r.scores["mlp"])
    df = r.to_pandas()
    assert set(df.columns) >= {"token", "layer", "kind", "score"}
    assert len(df) == 3 * len(r.tokens) * tiny.n_layers
    assert r.warnings  # a random tiny model is never sure of its answer

    from workbench.figures.tracing import aie_figure, row_labels, trace_figure

    fig = trace_figure(r)
    assert len(fig.data) == 3
    # One colour scale for every kind, from the corrupted baseline to the best cell of any kind,
    # also when each kind is drawn in a figure of its own (the app's panels).
    best = max(float(np.nanmax(g)) for g in r.scores.values())
    for kind in r.scores:
        (alone,) = trace_figure(r, kinds=[kind]).data
        assert alone.zmin == r.corrupted_prob and alone.zmax == pytest.approx(max(best, r.corrupted_prob + 1e-6))
        # The colour bar names where the scale starts: the corrupted run.
        assert alone.colorbar.tickvals[0] == r.corrupted_prob and "corrupted" in alone.colorbar.ticktext[0]
    assert sum(label.endswith("*") or "*\u200b" in label for label in row_labels(r)) == r.subject_range[1] - r.subject_range[0]

    facts = [FACT, wb.Fact("Colosseum", "The {} is in the city of", "Rome"), wb.Fact("x", "{} is", "y")]
    aie = average_indirect_effect(tiny, facts, kind="all", samples=2, window=2)
    assert isinstance(aie, AIEResult) and aie.n_facts == 3
    assert len(aie.mean["mlp"]["last subject token"]) == tiny.n_layers
    json.loads(aie.to_json())
    assert len(aie.to_pandas()) == 3 * 6 * tiny.n_layers
    assert len(aie_figure(aie).data) > 0


def test_cli_trace_json(capsys):
    from workbench.cli import main

    code = main(["trace", "--model", "tiny-gemma3", "--subject", "Eiffel Tower", "--prompt",
                 "The {} is located in the city of", "--kind", "mlp", "--samples", "2", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"tokens", "subject_range", "answer", "clean_prob", "corrupted_prob", "scores", "seconds",
                        "warnings", "method"}
    assert out["method"] == "trace"
    assert list(out["scores"]) == ["mlp"]
    assert len(out["scores"]["mlp"]) == len(out["tokens"])

    code = main(["trace", "--model", "tiny-gemma3", "--subject", "Big Ben", "--prompt", "The {} is in", "--samples", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "samples" in err


@pytest.mark.slow
def test_gemma_eiffel_tower_trace(gemma):
    model = gemma
    r = trace(model, FACT, samples=2, precision="float32")  # compared with the float32 reference below
    assert r.answer == " Paris"
    assert r.clean_prob > 0.5 and r.corrupted_prob < r.clean_prob
    start, end = r.subject_range
    assert "Eiffel" in "".join(r.tokens[start:end])
    # the fast path matches the obvious one on a few cells of every kind
    cells = [(end - 1, 2), (len(r.tokens) - 1, 9), (end, 14)]
    ref = trace_reference(model, FACT, samples=2, cells=cells)
    for kind in ("resid", "mlp", "attn"):
        for c in cells:
            assert abs(ref[kind][c] - r.scores[kind][c]) < 1e-4
    assert not _hooks_left(model)


# -- attribution preview, a chosen answer, bfloat16 --------------------------------------------


def test_attribution_equals_finite_differences():
    """Each per-layer estimate is the derivative of the score along (clean - corrupted) at that state."""
    from workbench.locate.attribution import layer_attributions
    from workbench.locate.setup import trace_setup

    model = wb.load_model("tiny-gemma3", dtype=torch.float64)
    setup = trace_setup(model, FACT, wb.TraceSettings(samples=2, noise=3.0, seed=0))
    grads = layer_attributions(model, setup.runner, setup.x0, setup.answer_id)
    roles, runner = model.roles, setup.runner
    clean = {"resid": runner.resid[1:], "mlp": runner.acts["mlp"], "attn": runner.acts["attn"]}
    corrupted = {"resid": setup.corrupted.resid[1:]}
    got = {}

    def grab(kind, layer):
        def fn(x, hook):
            got[(kind, layer)] = x.detach().clone()
            return x
        return fn

    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(roles.hook(k, l), grab(k, l)) for k in ("mlp", "attn")
                                                        for l in range(model.n_layers)]):
        runner.run(0, setup.x0)
    corrupted.update({k: [got[(k, l)] for l in range(model.n_layers)] for k in ("mlp", "attn")})

    def score(kind, t, layer, alpha):
        delta = clean[kind][layer][0, t] - corrupted[kind][layer][:, t]

        def shift(x, hook):
            x = x.clone()
            x[:, t] += alpha * delta
            return x
        hidden = runner.run(0, setup.x0, [(roles.hook(kind, layer), shift)])
        return float(torch.softmax(model.logits_from_hidden(hidden), -1)[:, setup.answer_id].mean())

    end = setup.end
    for kind, t, layer in [("resid", end - 1, 0), ("mlp", end - 1, 1), ("attn", len(setup.ids) - 1, 1), ("mlp", end, 0)]:
        # The slope at 0 of a quartic fitted to nine points: the attention softmax runs in
        # float32 even in a float64 model, so one central difference is at the mercy of the
        # CPU's float32 rounding (a 1e-3 step was off by 0.7 % on a CPU with AVX-512); the
        # fit averages that noise and its truncation error is O(h^4). A wrong position,
        # sign or copy would be off by far more than 1 %.
        alphas = np.linspace(-0.08, 0.08, 9)
        values = [score(kind, t, layer, float(a)) for a in alphas]
        fd = np.polynomial.polynomial.polyfit(alphas, values, 4)[1]
        assert grads[kind][t, layer] == pytest.approx(fd, rel=1e-2), (kind, t, layer)


def test_attribution_preview_is_a_trace_result(tiny):
    fast = trace(tiny, FACT, samples=2, window=3, method="attribution")
    assert fast.method == "attribution" and set(fast.scores) == {"resid", "mlp", "attn"}
    start = fast.subject_range[0]
    for grid in fast.scores.values():
        assert grid.shape == (len(fast.tokens), tiny.n_layers)
        assert np.all(grid[:start] == fast.corrupted_prob)  # nothing before the subject can change
    assert not _hooks_left(tiny)
    assert all(p.grad is None for p in tiny.hf_model.parameters())  # no gradients left on the model
    with pytest.raises(WorkbenchError, match="unknown trace method 'fast'"):
        trace(tiny, FACT, method="fast")


def test_trace_of_a_chosen_answer(tiny):
    r = trace(tiny, FACT, kinds="mlp", samples=2, window=2, answer="Rome", precision="float32")
    assert r.answer_id == tiny.encode(" Rome", prompt=False)[0]
    ref = trace_reference(tiny, FACT, kinds="mlp", samples=2, window=2, answer="Rome")
    np.testing.assert_allclose(r.scores["mlp"], ref["mlp"], atol=1e-5)
    with pytest.raises(WorkbenchError, match="answer must be a non-empty word"):
        trace(tiny, FACT, answer="  ")


def test_bfloat16_trace_follows_float32(tiny, monkeypatch):
    from workbench.runtime import lowp

    monkeypatch.setattr(lowp, "native_bf16", lambda: True)
    before = {n: p.detach().clone() for n, p in tiny.hf_model.named_parameters()}
    # Asked for by name: the bfloat16 path ('auto' takes it only within the measured bound).
    low = trace(tiny, FACT, samples=2, window=2, precision="bfloat16")
    assert low.precision == "bfloat16"
    assert trace(tiny, FACT, samples=2, window=2).precision == "float32"  # never measured: float32
    full = trace(tiny, FACT, samples=2, window=2, precision="float32")
    assert full.precision == "float32"
    for kind in low.scores:
        assert np.abs(low.scores[kind] - full.scores[kind]).max() <= 1e-3
    assert all(torch.equal(p, before[n]) and p.dtype == torch.float32 for n, p in tiny.hf_model.named_parameters())
    with pytest.raises(WorkbenchError, match="unknown precision"):
        trace(tiny, FACT, precision="half")


def test_colour_bar_ticks_mark_the_corrupted_and_clean_runs():
    from workbench.figures.tracing import baseline_ticks

    assert baseline_ticks(0.01, 0.5, 0.6) == {"tickvals": [0.01, 0.5, 0.6],
                                              "ticktext": ["0.010 corrupted", "0.500 clean", "0.600"]}
    # Clean at the top of the scale: one tick for both, not two overprinted.
    assert baseline_ticks(0.01, 0.6, 0.6)["tickvals"] == [0.01, 0.6]
    # A restoration that never reaches the clean run: clean is off the scale and not marked.
    assert baseline_ticks(0.01, 0.9, 0.3)["ticktext"] == ["0.010 corrupted", "0.300"]
