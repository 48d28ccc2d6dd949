"""What an edit touches (editing/touched.py), and the thread policy as a CLI process reads it back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import workbench as wb
from workbench.corpus import wiki_texts
from workbench.errors import WorkbenchError

FACT = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("WORKBENCH_PROGRESS", "0")


@pytest.fixture(scope="module")
def tiny():
    return wb.load_model("tiny-gemma3")


def test_touched_ranks_the_edit_prompt_first_and_leaves_weights_as_edited(tiny):
    # k* from the edit prompt alone (no key prefixes): its own key is then the one ROME wrote for.
    h = wb.edit(tiny, FACT, method="rome", layers=[1], samples=1500, n_prefixes=2, n_key_prefixes=0, steps=5,
                check_known=False, min_prob=0)
    try:
        edited = {k: v.clone() for k, v in tiny.state_dict().items()}
        texts = wiki_texts("stats", limit=40) + [FACT.text]
        t = h.touched(top_k=3, texts=texts, samples=100_000)
        assert t.top[0]["text_index"] == len(texts) - 1  # the edit prompt's own key is touched most
        assert "Tower" in t.top[0]["token"]  # at the subject's last token, where k* was read
        # There the change is the edit's own ‖ΔW k*‖.
        assert t.top[0]["change"] == pytest.approx(h.info["facts"][0]["delta_norm"], rel=1e-4)
        assert t.top[0]["change"] >= t.top[1]["change"] >= t.top[2]["change"]
        assert len(t.random) == 3 and all(r["kl_token"] >= 0 for r in t.top + t.random)
        assert t.texts_scanned == len(texts) and t.layers == [1]
        assert all(torch.equal(edited[k], v) for k, v in tiny.state_dict().items())  # bitwise as edited
        json.loads(t.to_json())
        assert len(t.to_pandas()) == 6
    finally:
        h.revert()
    with pytest.raises(WorkbenchError, match="reverted"):
        h.touched()


def test_touched_kl_equals_each_text_unembedded_alone(tiny):
    """The KLs, computed from chunks of every text's rows at once, equal the obvious computation:
    each text alone through the model before and after the edit, every position unembedded."""
    h = wb.edit(tiny, FACT, method="rome", layers=[1], samples=1500, n_prefixes=2, n_key_prefixes=0, steps=5,
                check_known=False, min_prob=0)
    try:
        texts = wiki_texts("stats", limit=60) + [FACT.text]
        t = h.touched(top_k=4, n_random=4, texts=texts, samples=100_000, max_tokens=48, batch_size=3)

        def logp(ids):
            with torch.no_grad():
                return tiny.logits_from_hidden(tiny.hidden(torch.tensor([ids]))[0]).float().log_softmax(-1)

        for r in t.top + t.random:
            ids = tiny.encode(texts[r["text_index"]])[:48]
            after = logp(ids)
            with h.weights_before():
                before = logp(ids)
            kl = (before.exp() * (before - after)).sum(-1).clamp_min(0)[1:]  # positions after BOS
            assert r["kl_token"] == pytest.approx(float(kl[r["position"] - 1]), rel=1e-3, abs=1e-7)
            assert r["kl_text"] == pytest.approx(float(kl.mean()), rel=1e-3, abs=1e-7)
        assert t.kl_top_mean > 0
    finally:
        h.revert()


def test_touched_refuses_edits_without_weights(tiny):
    h = wb.edit(tiny, FACT, method="in-context", min_prob=0)
    try:
        with pytest.raises(WorkbenchError, match="changes no weights"):
            h.touched()
    finally:
        h.revert()


@pytest.mark.slow
def test_touched_texts_move_more_than_random_ones_on_default_model(gemma):
    with wb.edit(gemma, FACT, method="rome") as h:
        # 32 tokens a text: the KL unembeds every position of 16 texts twice over Gemma's 262k
        # vocabulary, which at the default 128 was over a minute of the suite on a 2-core CPU.
        t = h.touched(top_k=8, samples=4000, max_tokens=32)
        assert t.kl_top_mean > t.kl_random_mean, (t.kl_top_mean, t.kl_random_mean)


def _cli(*args: str, env: dict | None = None) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "WORKBENCH_THREADS")}
    full.update(env or {})
    out = subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True,
                         env=full, timeout=120, check=True)
    return json.loads(out.stdout)


def test_thread_policy_is_in_effect_in_a_cli_process():
    got = _cli("info", "--json")["threads"]
    assert got["policy"] == "passive" and got["omp_wait_policy"] == "PASSIVE" and got["in_effect"]
    one = _cli("info", "--json", env={"WORKBENCH_THREADS": "1"})["threads"]
    assert one["torch_threads"] == 1 and one["omp_wait_policy"] == "PASSIVE"
    plain = _cli("info", "--json", env={"WORKBENCH_THREADS": "torch"})["threads"]
    assert plain["policy"] == "torch" and plain["omp_wait_policy"] is None
    # A user's own setting wins.
    theirs = _cli("info", "--json", env={"OMP_WAIT_POLICY": "ACTIVE"})["threads"]
    assert theirs["omp_wait_policy"] == "ACTIVE"


def test_cli_attribution_preview(capsys):
    from workbench.cli import main

    code = main(["trace", "--model", "tiny-gemma3", "--subject", "Eiffel Tower", "--prompt",
                 "The {} is located in the city of", "--kind", "mlp", "--samples", "2", "--method", "attribution",
                 "--answer", "Rome", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "attribution" and out["answer"].strip().startswith("R")
