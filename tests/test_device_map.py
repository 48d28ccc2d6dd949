"""Models placed by ``device_map`` (accelerate): every locator and editor on them, and the refusal
of edits to weights offloaded to disk. Multi-GPU placement needs GPUs; here "auto" places on the CPU."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.errors import WorkbenchError


@pytest.fixture(scope="module")
def placed():
    return wb.load_model("tiny-gemma3", device_map="auto")


def test_device_map_model_traces_edits_and_reverts_bitwise(placed, tiny_gemma):
    fact = wb.bundled_facts()[0]
    assert placed.device_map == "auto" and placed.fingerprint == tiny_gemma.fingerprint
    a = wb.trace(placed, fact, kinds="mlp", samples=2, window=2)
    b = wb.trace(tiny_gemma, fact, kinds="mlp", samples=2, window=2)
    torch.testing.assert_close(torch.as_tensor(a.scores["mlp"]), torch.as_tensor(b.scores["mlp"]))
    before = {k: v.clone() for k, v in placed.state_dict().items()}
    h = wb.edit(placed, fact, method="rome", min_prob=0, steps=3)
    assert any(not torch.equal(before[k], v) for k, v in placed.state_dict().items())
    h.revert()
    assert all(torch.equal(before[k], v) for k, v in placed.state_dict().items())


def test_workers_load_a_placed_model_with_its_device_map(placed):
    from workbench.runtime.cluster import ModelSpec

    spec = ModelSpec.of(placed)
    assert spec.device_map == "auto" and spec.device is None
    assert spec.load().fingerprint == placed.fingerprint


def test_edit_refuses_weights_offloaded_to_disk(placed, monkeypatch):
    param = next(placed.hf_model.parameters())
    real = placed.hf_model.named_parameters

    def with_one_on_meta(*args, **kwargs):
        for name, p in real(*args, **kwargs):
            yield name, (torch.empty(p.shape, device="meta") if p is param else p)

    monkeypatch.setattr(placed.hf_model, "named_parameters", with_one_on_meta)
    before = {k: v.clone() for k, v in placed.state_dict().items()}
    with pytest.raises(WorkbenchError, match="offloaded to disk by its device_map"):
        wb.edit(placed, wb.bundled_facts()[0], method="rome", min_prob=0, steps=3)
    assert all(torch.equal(before[k], v) for k, v in placed.state_dict().items())
