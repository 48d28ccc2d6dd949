"""The editors built for many edits survive 50 sequential edits and come back bitwise."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.editing import alphaedit as ae
from workbench.editing.handle import active_edits

SETTINGS = {
    "emmet": dict(layers=[1], samples=1500, n_prefixes=1, n_key_prefixes=1, steps=2, check_known=False),
    "alphaedit": dict(layers=[1, 2], samples=1500, n_prefixes=1, steps=2, check_known=False),
    "grace": dict(layers=[2], steps=2),
    "wise": dict(layers=[2], steps=2, n_prefixes=0, n_contrast=1),
}


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_fifty_sequential_edits_then_revert_bitwise(tiny_gemma, method):
    model = tiny_gemma
    # 50 facts with distinct subjects (one subject twice would be one fact edited twice).
    facts, seen = [], set()
    for f in wb.bundled_facts():
        if f.target_new and f.subject not in seen:
            facts.append(f)
            seen.add(f.subject)
        if len(facts) == 50:
            break
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe_prompt = "The weather in the mountains was"
    base = model.logits(model.tokens(probe_prompt))
    handles = [wb.edit(model, f, method=method, min_prob=0, **SETTINGS[method]) for f in facts]
    assert active_edits(model) == handles
    if method == "alphaedit":
        assert ae.kept_keys(model, 2).shape[1] >= 50  # every edit's keys enter the later solves
    for h in reversed(handles):
        h.revert()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model.logits(model.tokens(probe_prompt)), base)
    assert model.prompt_edits == [] and active_edits(model) == []
    assert ae.kept_keys(model, 2) is None
