"""Knowledge neurons: integrated-gradients completeness and the effect of suppression."""

from __future__ import annotations

import random

import pytest

from workbench.errors import WorkbenchError
from workbench.locate.neurons import integrated_gradients, knowledge_neurons, measure_effect

PROMPT = "The Eiffel Tower is located in the city of"


def _complete(model, layer, steps=20, tol=0.05):
    a = integrated_gradients(model, PROMPT, "Paris", layer=layer, steps=steps)
    delta = a.prob_full - a.prob_baseline
    assert abs(delta) > 0
    assert a.completeness_error <= tol * abs(delta), (float(a.attributions.sum()), delta)


@pytest.mark.parametrize("name", ["tiny_gemma", "tiny_llama"])
def test_completeness_tiny(name, request):
    model = request.getfixturevalue(name)
    for layer in range(model.n_layers):
        _complete(model, layer)


def _same_as_full_forward(model, layers, prompt=PROMPT, target="Paris"):
    for layer in layers:
        fast = integrated_gradients(model, prompt, target, layer=layer)
        full = integrated_gradients(model, prompt, target, layer=layer, full_forward=True)
        scale = float(full.attributions.abs().max())
        assert scale > 0
        assert float((fast.attributions - full.attributions).abs().max()) <= 1e-4 * scale, layer
        assert fast.prob_full == pytest.approx(full.prob_full, abs=1e-5)
        assert fast.prob_baseline == pytest.approx(full.prob_baseline, abs=1e-5)


@pytest.mark.parametrize("name", ["tiny_gemma", "tiny_llama", "tiny_olmo", "tiny_phi3"])
def test_last_position_run_matches_full_forward(name, request):
    # The default runs only blocks layer.. at the last position; the reference runs
    # the whole prompt through every block for every integration step.
    model = request.getfixturevalue(name)
    _same_as_full_forward(model, range(model.n_layers))
    _same_as_full_forward(model, [0], prompt="Paris", target=" France")  # one token where there is no BOS: no earlier positions


def test_last_position_run_matches_full_forward_gemma(gemma):
    _same_as_full_forward(gemma, [9, 17])


@pytest.mark.slow
def test_completeness_gemma(gemma):
    _complete(gemma, 16)


def test_report(tiny_llama):
    r = knowledge_neurons(tiny_llama, [PROMPT, "The Eiffel Tower stands in"], "Paris", layers=[2, 3], share=0.5)
    assert r.layers == [2, 3] and len(r.prompts) == 2 and r.neurons
    assert all(n.share >= 0.5 and n.layer in (2, 3) for n in r.neurons)
    assert r.effect is not None and len(r.effect.per_prompt) == 2
    assert len(r.to_pandas()) == len(r.neurons)
    from workbench.figures.memories import neuron_attributions

    assert neuron_attributions(r).data


def test_bad_target(tiny_llama):
    with pytest.raises(WorkbenchError, match="empty"):
        knowledge_neurons(tiny_llama, PROMPT, "  ")
    with pytest.raises(WorkbenchError, match="out of range"):
        knowledge_neurons(tiny_llama, PROMPT, "Paris", layers=[12])


@pytest.mark.slow
def test_suppressing_knowledge_neurons_beats_random(gemma):
    """Small version of benchmarks/neurons.py: 3 known facts, top layers only."""
    import workbench as wb

    rng = random.Random(0)
    facts = wb.bundled_facts()[:3]
    kn_p, rand_p = [], []
    for fact in facts:
        r = knowledge_neurons(gemma, fact.text, fact.target_true, layers=[16, 17], measure=False)
        kn = r.pairs()
        assert kn
        rand = [(layer, rng.randrange(gemma.d_mlp)) for layer, _ in kn]
        kn_p.append(measure_effect(gemma, [fact.text], fact.target_true, kn).suppressed)
        rand_p.append(measure_effect(gemma, [fact.text], fact.target_true, rand).suppressed)
    assert sum(kn_p) < sum(rand_p)


def test_cli_json(tiny_llama, capsys):
    import json

    from workbench.cli import main

    args = ["neurons", "--prompt", PROMPT, "--paraphrase", "The Eiffel Tower stands in", "--target", "Paris",
            "--layers", "3", "--share", "0.5", "--model", "tiny-llama", "--json"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    data = json.loads(out)
    assert data["target_token"] == " Paris" and data["layers"] == [3]
    assert main(["neurons", "--prompt", PROMPT, "--target", " ", "--model", "tiny-llama"]) == 2
    assert "empty" in capsys.readouterr().err
