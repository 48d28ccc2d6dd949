"""Weight-editing methods: exact revert, save/load, failures leave weights untouched."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

import workbench as wb
from workbench.editing import optimize

os.environ.setdefault("WORKBENCH_PROGRESS", "0")

FACTS = [
    wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome",
            paraphrase_prompts=["Where is the Eiffel Tower? It is in"]),
    wb.Fact("Steve Jobs", "{} was the founder of", "Apple", "Microsoft"),
]
# Small settings so each method runs in about a second on a tiny model.
# min_prob=0: a random tiny model never reaches a new object in three steps, and these
# tests check the mechanics (revert, save, failure), not that the edit took.
FAST = {
    "rome": dict(samples=1500, n_prefixes=2, steps=3, check_known=False, min_prob=0),
    "memit": dict(samples=1500, n_prefixes=2, steps=3, check_known=False, min_prob=0),
    "pmet": dict(samples=1500, n_prefixes=2, steps=3, check_known=False, min_prob=0),
    "ft": dict(steps=3, check_known=False, min_prob=0),
    "kn": dict(steps=4, check_known=False, layers=[2, 3], min_prob=0),
}
LAYERS = {"rome": [1], "memit": [1, 2], "pmet": [1, 2], "ft": [2], "kn": None}


@pytest.fixture(scope="module", params=["tiny-gemma3", "tiny-llama"])
def tiny(request):
    return wb.load_model(request.param)


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, snap) -> bool:
    return all(torch.equal(snap[k], v) for k, v in model.state_dict().items())


def _p_new(model, facts) -> list[float]:
    """p(target_new) after each fact's own prompt."""
    return [wb.probe(model, f.text, targets=[f.target_new])[0].target(f.target_new).prob for f in facts]


@pytest.mark.parametrize("method", ["rome", "memit", "pmet", "ft", "kn"])
def test_revert_is_bitwise(tiny, method):
    snap = _snapshot(tiny)
    facts = FACTS if method in ("memit", "pmet") else FACTS[:1]
    kwargs = dict(FAST[method])
    layers = kwargs.pop("layers", LAYERS[method])
    h = wb.edit(tiny, facts, method=method, layers=layers, **kwargs)
    assert h.changes_weights and h.method == method
    assert not _same(tiny, snap)
    assert all(torch.isfinite(v).all() for v in h.after.values())
    h.revert()
    assert _same(tiny, snap)


def test_save_load_round_trip(tiny, tmp_path):
    snap = _snapshot(tiny)
    h = wb.edit(tiny, FACTS[0], method="rome", layers=[1], **FAST["rome"])
    edited = _snapshot(tiny)
    path = h.save(tmp_path / "edit")
    h.revert()
    h2 = wb.load_edit(tiny, path)
    assert _same(tiny, edited)
    h2.revert()
    assert _same(tiny, snap)


def test_nan_in_optimisation_leaves_weights(tiny, monkeypatch):
    snap = _snapshot(tiny)
    from workbench.editing import targets

    def poison(res):
        res.deltas = {n: torch.full_like(d, float("nan")) for n, d in res.deltas.items()}
        return res

    one, many = targets.optimize_deltas, targets.search_deltas
    monkeypatch.setattr("workbench.editing.rome.optimize_deltas", lambda *a, **k: poison(one(*a, **k)))
    monkeypatch.setattr("workbench.editing.memit.search_deltas", lambda *a, **k: [poison(r) for r in many(*a, **k)])
    monkeypatch.setattr("workbench.editing.memit.optimize_deltas", lambda *a, **k: poison(one(*a, **k)))
    with pytest.raises(wb.WorkbenchError, match="NaN|non-finite"):
        wb.edit(tiny, FACTS[0], method="rome", layers=[1], **FAST["rome"])
    with pytest.raises(wb.WorkbenchError, match="NaN|non-finite"):
        wb.edit(tiny, FACTS, method="memit", layers=[1, 2], **FAST["memit"])
    assert _same(tiny, snap)
    assert wb.active_edits(tiny) == []


def test_nan_loss_aborts(tiny, monkeypatch):
    snap = _snapshot(tiny)
    real = tiny.logits_from_hidden
    monkeypatch.setattr(tiny, "logits_from_hidden", lambda h: real(h) * float("nan"))
    mixed = optimize.MixedUnembed.__call__  # the v* search's default unembedding
    monkeypatch.setattr(optimize.MixedUnembed, "__call__", lambda self, h, keep=None, **kw: mixed(self, h, keep, **kw) * float("nan"))
    with pytest.raises(wb.WorkbenchError, match="NaN"):
        wb.edit(tiny, FACTS[0], method="rome", layers=[1], **FAST["rome"])
    with pytest.raises(wb.WorkbenchError, match="NaN"):
        wb.edit(tiny, FACTS[0], method="ft", layers=[1], **FAST["ft"])
    assert _same(tiny, snap)


def test_interrupt_mid_edit_leaves_weights(tiny, monkeypatch):
    snap = _snapshot(tiny)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("workbench.editing.memit.residual_targets", boom)
    with pytest.raises(KeyboardInterrupt):
        wb.edit(tiny, FACTS, method="memit", layers=[1, 2], **FAST["memit"])
    assert _same(tiny, snap)


def test_bad_input(tiny):
    with pytest.raises(wb.WorkbenchError, match="equals"):
        wb.Fact("Eiffel Tower", "The {} is in", "Paris", " Paris")
    clash = [FACTS[0], FACTS[0].with_new("Berlin")]
    with pytest.raises(wb.WorkbenchError, match="two different"):
        wb.edit(tiny, clash, method="memit", layers=[1, 2], **FAST["memit"])
    with pytest.raises(wb.WorkbenchError, match="out of range"):
        wb.edit(tiny, FACTS[0], method="rome", layers=[99])
    snap = _snapshot(tiny)
    for method in ("rome", "memit", "pmet"):
        # A misspelt hyperparameter names itself and the ones the search takes.
        with pytest.raises(wb.WorkbenchError, match="unknown hyperparameter.*stepz.*steps, lr"):
            wb.edit(tiny, FACTS[0], method=method, layers=[1], stepz=3)
    with pytest.raises(wb.WorkbenchError, match="steps must be at least 1"):
        wb.edit(tiny, FACTS[0], method="rome", layers=[1], steps=0)
    with pytest.raises(wb.WorkbenchError, match=r"beta1 .* must be in \[0, 1\), got 1.0"):
        wb.edit(tiny, FACTS[0], method="rome", layers=[1], beta1=1.0)
    assert _same(tiny, snap)
    assert wb.active_edits(tiny) == []


def test_search_settings_live_in_one_place():
    """No method or search function repeats a target-search setting in its signature:
    they take them as **search, SearchParams holds the shared defaults and each record its own."""
    import inspect

    from workbench.editing.memit import memit, spread_edit
    from workbench.editing.targets import optimize_deltas
    from workbench.editing.pmet import pmet
    from workbench.editing.rome import rome
    from workbench.editing import SPECS
    from workbench.editing.search import SearchParams

    names = set(SearchParams.names())
    for fn in (rome, memit, pmet, spread_edit, optimize_deltas):
        repeated = names & set(inspect.signature(fn).parameters)
        assert not repeated, f"{fn.__name__} repeats {sorted(repeated)}"
    assert {n for n, s in SPECS.items() if s.search} == {"rome", "memit", "pmet", "memit-kept"}
    assert SearchParams.for_method("rome").beta1 == 0.5 and SearchParams.for_method("rome").n_prefixes == 5
    assert SearchParams.for_method("memit") == SearchParams() == SearchParams.for_method("a-new-editor")
    assert SearchParams.from_kwargs({"n_prefixes": 2}, method="rome").beta1 == 0.5
    with pytest.raises(wb.WorkbenchError, match="n_prefixes must be a whole number"):
        SearchParams(n_prefixes=-1)


def test_unknown_fact_warns(tiny):
    # A random tiny model knows nothing: either object may win, so ask for the one it prefers less.
    p = wb.probe(tiny, FACTS[0].text, targets=["Paris", "Rome"])[0]
    fact = FACTS[0] if p.target("Paris").prob < p.target("Rome").prob else wb.Fact(
        "Eiffel Tower", "The {} is located in the city of", "Rome", "Paris")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = wb.edit(tiny, fact, method="rome", layers=[1], **{**FAST["rome"], "check_known": True})
    h.revert()
    assert any("does not know" in str(w.message) for w in caught)


def test_multi_token_target_counts_all_tokens(tiny):
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rio de Janeiro")
    batch = optimize.build_batch(tiny, [fact], [], kl_prompt=None)
    n = len(wb.probing.target_ids(tiny, fact.text, "Rio de Janeiro"))
    assert n > 1 and len(batch.target_tok[0]) == n and len(batch.target_pos[0]) == n


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rome", "memit", "pmet", "ft"])
def test_each_method_flips_known_fact(method, gemma):
    model = gemma
    fact = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
    snap = _snapshot(model)
    with wb.edit(model, fact, method=method):
        p = wb.probe(model, fact.text, targets=["Paris", "Rome"])[0]
        assert p.target("Rome").prob > p.target("Paris").prob
    assert _same(model, snap)


def test_cli_edit_json(capsys, tmp_path):
    import json

    from workbench.cli import main

    args = ["edit", "--model", "tiny-gemma3", "--method", "rome", "--subject", "Eiffel Tower",
            "--prompt", "The {} is located in the city of", "--target-new", "Rome", "--target-true", "Paris",
            "--layers", "1", "--probe", "The Eiffel Tower is in", "--save", str(tmp_path / "e"), "--json"]
    # The random tiny model does not reach "Rome": refused and reverted, nothing saved, one line.
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "below min_prob=0.05: it was reverted" in err and not (tmp_path / "e.safetensors").exists()
    rc = main(args + ["--min-prob", "0"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "rome" and out["layers"] == [1] and len(out["probes"]) == 2
    assert set(out["probes"][0]["before"]) == {"top", "p_new", "p_true"}
    assert (tmp_path / "e.safetensors").exists()
    assert main(["edit", "--model", "tiny-gemma3", "--subject", "X", "--prompt", "no braces", "--target-new", "Y"]) == 2


def test_memit_per_layer_targets_give_each_layer_its_delta(tiny):
    """targets='each': with λ near 0 every layer's update maps its (updated) keys to exactly
    the δ it was asked for, so a second pass has nothing left to do; the edit works and reverts."""
    snap = _snapshot(tiny)
    p_before = _p_new(tiny, FACTS)
    h = wb.edit(tiny, FACTS, method="memit", layers=[1, 2], targets="each", passes=2, mom2_weight=1e-6,
                **FAST["memit"])
    misses = h.info["misses"]
    assert h.info["targets"] == "each" and set(misses) == {1, 2}
    assert all(m[0] < 1e-4 for m in misses.values()), misses
    p_after = _p_new(tiny, FACTS)
    h.revert()
    assert _same(tiny, snap)
    assert all(a > b for a, b in zip(p_after, p_before)), (p_before, p_after)
    # The default λ leaves part of each δ undelivered; MEMIT's own targets are unchanged by the option.
    h = wb.edit(tiny, FACTS, method="memit", layers=[1, 2], targets="each", **FAST["memit"])
    assert all(0 < m[0] < 1 for m in h.info["misses"].values())
    h.revert()
    with pytest.raises(wb.WorkbenchError, match="targets must be"):
        wb.edit(tiny, FACTS, method="memit", layers=[1, 2], targets="all", **FAST["memit"])
    assert _same(tiny, snap)


def test_memit_second_pass_starts_from_what_the_first_left(tiny):
    """passes=2 goes through the layers again: its first residual of pass two is the
    residual a one-pass edit leaves (the same targets), and both revert bitwise."""
    snap = _snapshot(tiny)
    one = wb.edit(tiny, FACTS, method="memit", layers=[1, 2], **FAST["memit"])
    one.revert()
    two = wb.edit(tiny, FACTS, method="memit", layers=[1, 2], passes=2, **FAST["memit"])
    two.revert()
    assert _same(tiny, snap)
    norms = two.info["residual_norms"]
    assert [len(norms[layer]) for layer in (1, 2)] == [2, 2]
    assert norms[1][0] == pytest.approx(one.info["residual_norms"][1][0], rel=1e-6)
    assert norms[1][1] == pytest.approx(one.info["final_residual_norm"], rel=1e-6)
    with pytest.raises(wb.WorkbenchError, match="passes must be a whole number"):
        wb.edit(tiny, FACTS, method="memit", layers=[1, 2], passes=0, **FAST["memit"])
    assert _same(tiny, snap)
