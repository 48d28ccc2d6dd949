"""benchmarks/bos_restore.py's split of an edit at the BOS position: the BOS column is computed
with the unedited weights (or alone with the edited ones), every other position as asked."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("bos_restore", ROOT / "benchmarks" / "bos_restore.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bos_column_is_the_unedited_models_or_the_edited_ones(tiny_gemma):
    bos_split = _module().bos_split
    model = tiny_gemma
    params = dict(model.hf_model.named_parameters(remove_duplicate=False))
    name = next(n for n in params if "layers.0." in n and "down_proj" in n and n.endswith("weight"))
    ids = torch.tensor([model.encode("The Eiffel Tower is in")])
    assert ids[0, 0] == model.tokenizer.bos_token_id

    def logits():
        with torch.no_grad():
            return model.hf_model(input_ids=ids).logits[0]

    unedited = logits()
    original = {name: params[name].detach().clone()}
    torch.manual_seed(0)
    try:
        with torch.no_grad():
            params[name].add_(torch.randn_like(params[name]) * params[name].std() * 3)
        edited = logits()
        with bos_split(model, original, unedited_at_bos=True):
            spared = logits()
        with bos_split(model, original, unedited_at_bos=False):
            bos_only = logits()
    finally:
        with torch.no_grad():
            params[name].copy_(original[name])
    assert not torch.allclose(edited[0], unedited[0], atol=1e-4)             # the edit moves BOS
    torch.testing.assert_close(spared[0], unedited[0], atol=1e-5, rtol=1e-5)   # BOS attends to itself only
    torch.testing.assert_close(bos_only[0], edited[0], atol=1e-5, rtol=1e-5)
    # Elsewhere neither: the other positions read the edited or unedited BOS through attention.
    assert not torch.allclose(spared[1:], unedited[1:], atol=1e-4)
    torch.testing.assert_close(logits(), unedited)                             # hooks gone
