"""The role map: listed families get their entry, any other family the bridge supports
gets the default roles read off the bridge, and a missing role is a one-line error.

Tracing, memories and ROME on the two unlisted families (tiny-olmo, tiny-phi3) are
checked in test_tracing, test_memories, test_foundation and test_rome next to the
listed ones.
"""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from workbench.core.architecture import FAMILIES, Roles, check_roles, roles_for
from workbench.errors import WorkbenchError


@pytest.mark.parametrize("fixture, family", [("tiny_olmo", "olmo"), ("tiny_phi3", "phi3")])
def test_unlisted_family_loads_on_default_roles(fixture, family, request):
    model = request.getfixturevalue(fixture)
    assert family not in FAMILIES
    assert model.roles == Roles(family)
    check_roles(model.bridge, model.roles)


def test_listed_family_keeps_its_entry(tiny_gemma):
    assert tiny_gemma.roles is FAMILIES[tiny_gemma.roles.family]
    assert tiny_gemma.roles.ffn_post_norm == "ln2_post"


def _bridge_like(bridge, **changes):
    """The parts of a bridge check_roles and roles_for read, some of them changed."""
    parts = {"hook_dict": bridge.hook_dict, "cfg": bridge.cfg, "blocks": bridge.blocks}
    return types.SimpleNamespace(**{**parts, **changes})


def test_layout_is_read_off_the_bridge(tiny_gemma, tiny_llama):
    # Gemma's blocks have a post-FFN norm: an unlisted family built like it gets one.
    assert roles_for("not-a-family", tiny_gemma.bridge) == Roles(
        "not-a-family", ffn_post_norm="ln2_post", attn_post_norm="ln1_post")
    assert roles_for("not-a-family", tiny_llama.bridge) == Roles("not-a-family")

    # An FFN output weight stored [d_mlp, d_model] (GPT-2's Conv1D) means rows are value vectors.
    block = types.SimpleNamespace(mlp=types.SimpleNamespace(out=types.SimpleNamespace(
        weight=torch.zeros(tiny_llama.d_mlp, tiny_llama.d_model))))
    conv = _bridge_like(tiny_llama.bridge, blocks=[block])
    assert roles_for("not-a-family", conv).value_weight_rows_are_values


def test_missing_roles_are_named_in_one_line(tiny_llama):
    bridge, roles = tiny_llama.bridge, tiny_llama.roles
    no_keys = _bridge_like(bridge, hook_dict={k: v for k, v in bridge.hook_dict.items() if not k.endswith("mlp.hook_post")})
    with pytest.raises(WorkbenchError, match=r"no 'ffn_keys' role: the bridge has no hook 'blocks\.0\.mlp\.hook_post'") as exc:
        check_roles(no_keys, roles)
    assert "\n" not in str(exc.value)
    with pytest.raises(WorkbenchError, match=r"FFN output weight of block 0 has shape \[64, 256\], expected \[256, 64\]"):
        check_roles(bridge, dataclasses.replace(roles, value_weight_rows_are_values=True))
    with pytest.raises(WorkbenchError, match="no FFN post-norm 'ln2_post'"):
        check_roles(bridge, dataclasses.replace(roles, ffn_post_norm="ln2_post"))
    no_out = _bridge_like(bridge, blocks=[types.SimpleNamespace(mlp=types.SimpleNamespace())] * tiny_llama.n_layers)
    with pytest.raises(WorkbenchError, match=r"no FFN output weight at blocks\.0\.mlp\.out"):
        check_roles(no_out, roles)
