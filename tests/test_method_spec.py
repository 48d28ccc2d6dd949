"""One record per editing method: a method registered from a module of its own appears
in the Edit panel, the CLI and Compare with its description, layer rule and settings,
without any other module naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import workbench as wb
from workbench.editing import SPECS, method_names, method_spec
from workbench.editing.registry import PLUGINS_VARIABLE, import_plugins, unregister_method
from workbench.errors import WorkbenchError
from workbench.facts import Fact

TOY = textwrap.dedent('''
    """A toy weight editor: scales one FFN output matrix (not a useful edit)."""
    from workbench.checks import Number
    from workbench.editing.handle import commit_weights
    from workbench.editing.registry import register_method


    @register_method("toy-scale", summary="scales one FFN output matrix (a test's toy)",
                     description="Toy: multiplies one layer's FFN output matrix by a factor.",
                     layers=lambda model: [model.n_layers - 1], limits={"factor": Number(0, 2)},
                     order=50, compare_default=True)
    def toy_scale(model, facts, *, layers=None, factor=0.5):
        layer = layers[0] if layers else model.n_layers - 1
        param = model.roles.value_weight(model.bridge, layer)
        name = next(n for n, p in model.hf_model.named_parameters() if p is param)
        return commit_weights(model, "toy-scale", [layer], [f.to_dict() for f in facts],
                              lambda: {name: param.detach() * factor})
''')

FACT = Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy_editor_plugin.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(PLUGINS_VARIABLE, "toy_editor_plugin")
    sys.modules.pop("toy_editor_plugin", None)
    assert import_plugins() == ["toy_editor_plugin"]
    yield tmp_path
    unregister_method("toy-scale")
    sys.modules.pop("toy_editor_plugin", None)


def _built_in() -> list[str]:
    # Other tests register toy methods of their own for the session; these are the workbench's.
    return [n for n in method_names() if method_spec(n).fn.__module__.startswith("workbench.editing.")]


def test_every_built_in_method_has_a_complete_record():
    assert len(_built_in()) == 15  # the eleven, AlphaEdit and WISE as published, MEMIT + kept keys, the retrieval chain
    for name in _built_in():
        spec = method_spec(name)
        assert spec.summary and spec.description, name
        assert spec.kind in ("weights", "overlay", "prompt")
        # A method that writes weights or hooks a layer has a layer rule; a text baseline has none.
        assert spec.edits_layers == (spec.kind != "prompt"), name
        if spec.kind == "overlay":
            assert spec.holds, name
    assert method_names()[0] == "rome"
    assert [n for n in _built_in() if method_spec(n).compare_default] == ["rome", "in-context", "retrieval"]


def test_unknown_method_names_the_known_ones():
    with pytest.raises(WorkbenchError, match="unknown editing method 'romee'; choose one of .*rome"):
        method_spec("romee")


def test_a_plugin_that_fails_to_import_says_which(monkeypatch):
    monkeypatch.setenv(PLUGINS_VARIABLE, "no_such_module_for_the_workbench")
    with pytest.raises(WorkbenchError, match="WORKBENCH_METHODS names 'no_such_module_for_the_workbench'"):
        import_plugins()


def test_a_toy_method_edits_checks_its_limits_and_reverts(toy, tiny_gemma):
    model = tiny_gemma
    spec = method_spec("toy-scale")
    assert spec.default_layers(model) == [model.n_layers - 1] and spec.settings() == {"factor": 0.5}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WorkbenchError, match="factor"):
        wb.edit(model, FACT, method="toy-scale", factor=5.0, min_prob=0)
    handle = wb.edit(model, FACT, method="toy-scale", min_prob=0)
    assert handle.layers == [model.n_layers - 1]
    handle.revert()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_toy_method_is_in_the_edit_panel_and_compare(toy, tiny_gemma):
    pytest.importorskip("ipywidgets")
    from workbench.ui import Workbench

    app = Workbench(tiny_gemma, fact=FACT, facts=[FACT], background=False)
    assert "toy-scale" in app.edit.method.options
    app.edit.method.value = "toy-scale"
    assert "multiplies one layer" in app.edit.description.value
    assert app.edit.layers.value == str(tiny_gemma.n_layers - 1) and not app.edit.layers.disabled
    assert "factor=0.5" in app.edit.hparams.placeholder
    app.edit.hparams.value = "min_prob=0"
    app.edit.task.button.click()
    assert app.edit.error.value == "", app.edit.error.text
    assert [h.method for h in wb.active_edits(tiny_gemma)] == ["toy-scale"]
    assert "Toy: multiplies" in app.edit.card.value or "toy-scale" in app.edit.history.value
    app.edit.revert_button.click()
    assert wb.active_edits(tiny_gemma) == []
    assert "toy-scale" in app.compare.methods.options and "toy-scale" in app.compare.methods.value


def test_a_toy_method_is_in_the_cli(toy):
    env = {**os.environ, PLUGINS_VARIABLE: "toy_editor_plugin",
           "PYTHONPATH": os.pathsep.join([str(toy), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "methods", "--json"], env=env,
                         capture_output=True, text=True, check=True).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["toy-scale"]["summary"].startswith("scales one FFN") and rows["toy-scale"]["kind"] == "weights"
    assert set(_built_in()) - {"toy-scale"} <= set(rows)
