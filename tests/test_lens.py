"""Logit lens."""

from __future__ import annotations

import json

import pytest

from workbench.errors import WorkbenchError
from workbench.locate.lens import lens
from workbench.probing import probe

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.mark.parametrize("name", ["tiny_gemma", "tiny_llama"])
def test_last_layer_matches_model_output(name, request):
    model = request.getfixturevalue(name)
    r = lens(model, PROMPT, watch="Paris", top_k=3)
    assert r.n_layers == model.n_layers and len(r.top[0]) == len(r.tokens)
    out = probe(model, PROMPT, targets=["Paris"], top_k=3)[0]
    assert r.top[-1][-1][0].token == out.top[0].token
    assert r.top[-1][-1][0].score == pytest.approx(out.top[0].prob, rel=1e-4)
    # The watched token is the first token of " Paris"; its last-layer probability is the model's.
    assert r.watch_prob[-1][-1] == pytest.approx(out.target("Paris").token_probs[0], rel=1e-4)
    assert len(r.watch_rank) == model.n_layers
    assert json.loads(r.to_json())["watch"] == r.watch
    assert len(r.to_pandas()) == model.n_layers * len(r.tokens)


def test_bad_input(tiny_llama):
    with pytest.raises(WorkbenchError, match="empty"):
        lens(tiny_llama, PROMPT, watch="")
    with pytest.raises(WorkbenchError, match="empty prompt"):
        lens(tiny_llama, "")


def test_cli_json(tiny_llama, capsys):
    from workbench.cli import main

    assert main(["lens", "--prompt", PROMPT, "--watch", "Paris", "--model", "tiny-llama", "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1 and json.loads(out)["watch"] == " Paris"
    assert main(["memories", "--prompt", PROMPT, "--layer", "7", "--model", "tiny-llama"]) == 2
    assert "layer 7 is out of range" in capsys.readouterr().err
    assert main(["memories", "--prompt", PROMPT, "--layer", "-1", "--top-k", "3", "--model", "tiny-llama", "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1 and len(json.loads(out)["sub_updates"]) == 3


def test_heatmap(tiny_gemma):
    from workbench.figures.memories import lens_heatmap

    fig = lens_heatmap(lens(tiny_gemma, "Hello world", watch="there"))
    assert len(fig.data[0].z) == tiny_gemma.n_layers
