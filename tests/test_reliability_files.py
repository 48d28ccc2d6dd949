"""Nothing half-applied, nothing poisoned: saved edits that are malformed or tampered with,
caches that an applied edit or a broken file would poison, and cache locations that cannot
be used. Each case gets one line naming what is wrong; the weights stay bitwise as they were.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

import workbench as wb
from workbench.errors import UnknownModelError, WorkbenchError

FACT = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
# A large step bound: on a random tiny model the change must move later layers' keys.
FT_FAST = dict(layers=[1], steps=3, lr=0.05, linf=0.05, check_known=False, min_prob=0)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, snap) -> bool:
    return all(torch.equal(snap[k], v) for k, v in model.state_dict().items())


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def saved(tiny_gemma, tmp_path_factory):
    """A saved FT edit and a saved in-context edit of the tiny Gemma, made once."""
    folder = tmp_path_factory.mktemp("saved")
    with wb.edit(tiny_gemma, FACT, method="ft", **FT_FAST) as h:
        h.save(folder / "ft")
    with wb.edit(tiny_gemma, FACT, method="in-context", min_prob=0) as h:
        h.save(folder / "ic")
    return folder


def _copy(saved, name: str, tmp_path):
    for suffix in (".safetensors", ".safetensors.json"):
        shutil.copy(saved / (name + suffix), tmp_path / (name + suffix))
    path = tmp_path / (name + ".safetensors")
    return path, path.with_name(path.name + ".json")


def _refused(model, path, match: str) -> str:
    snap = _snapshot(model)
    with pytest.raises(WorkbenchError, match=match) as exc:
        wb.load_edit(model, path)
    assert _same(model, snap) and wb.active_edits(model) == [] and model.prompt_edits == []
    return _one_line(exc)


# -- 1. a saved edit is checked whole before anything is written --------------------------


def test_a_saved_edit_loads_and_reverts(tiny_gemma, saved, tmp_path):
    snap = _snapshot(tiny_gemma)
    for name in ("ft", "ic"):
        path, _ = _copy(saved, name, tmp_path)
        h = wb.load_edit(tiny_gemma, path)
        assert wb.active_edits(tiny_gemma) == [h]
        assert wb.revert_all(tiny_gemma) == 1 and _same(tiny_gemma, snap) and tiny_gemma.prompt_edits == []


def _meta_change(key, value):
    def change(meta):
        if value is KeyError:
            del meta[key]
        else:
            meta[key] = value
    return change


def _prompt_change(key, value):
    def change(meta):
        if value is KeyError:
            del meta["prompt_edit"][key]
        else:
            meta["prompt_edit"][key] = value
    return change


def _retrieval_without_keys(meta):
    # Made from the in-context file: the retrieval loader needs no sentence encoder to fail.
    meta["method"] = "retrieval"
    meta["prompt_edit"] = {"kind": "retrieval", "statements": meta["prompt_edit"]["statements"],
                           "threshold": 0.7, "template": "Fact: {}\n"}


@pytest.mark.parametrize("name,change,match", [
    ("ft", _meta_change("layers", 5), r"'layers' must be a list of layer numbers 0\.\.3"),
    ("ft", _meta_change("layers", "evil"), r"'layers' must be a list of layer numbers.*'evil'"),
    ("ft", _meta_change("layers", [1, 99]), r"'layers' must be a list of layer numbers"),
    ("ft", _meta_change("method", KeyError), r"its metadata has no 'method'"),
    ("ft", _meta_change("method", 7), r"'method' must be a method name"),
    ("ft", _meta_change("facts", "Paris"), r"'facts' must be a list of facts"),
    ("ft", _meta_change("planted", 1), r"unknown key 'planted'"),
    ("ic", _prompt_change("statements", KeyError), r"in-context edit has no 'statements'"),
    ("ic", _prompt_change("demonstrations", "many"), r"'demonstrations'.*whole number.*'many'"),
    ("ic", _prompt_change("statements", "one string"), r"'statements' must be a list of texts"),
    ("ic", _retrieval_without_keys, r"retrieval edit has no 'keys'"),
], ids=["layers-number", "layers-string", "layers-out-of-range", "no-method", "method-number",
        "facts-string", "unknown-key", "incontext-no-statements", "demonstrations-many",
        "statements-string", "retrieval-no-keys"])
def test_malformed_edit_metadata_is_refused_before_anything_changes(tiny_gemma, saved, tmp_path, name, change, match):
    path, meta_path = _copy(saved, name, tmp_path)
    meta = json.loads(meta_path.read_text())
    change(meta)
    meta_path.write_text(json.dumps(meta))
    assert str(path) in _refused(tiny_gemma, path, match)
    assert wb.revert_all(tiny_gemma) == 0


def _as_dtype(dtype):
    def change(weights, model):
        (name,) = [k for k in weights if not k.startswith("memory::")]
        weights[name] = weights[name].to(dtype)
    return change


def _extra_memory(weights, model):
    weights["memory::keys.L1"] = torch.ones(model.d_mlp, 1)


def _memory_changed(weights, model):
    (name,) = [k for k in weights if k.startswith("memory::")]
    weights[name] = weights[name] + 1


@pytest.mark.parametrize("change,match", [
    (_as_dtype(torch.float64), r"stored as torch\.float64.*torch\.float32"),
    (_as_dtype(torch.int8), r"stored as torch\.int8.*torch\.float32"),
    (_extra_memory, r"memory tensor 'memory::keys\.L1' that its metadata does not list"),
], ids=["float64", "int8", "extra-memory"])
def test_tampered_edit_weights_are_refused(tiny_gemma, saved, tmp_path, change, match):
    path, _ = _copy(saved, "ft", tmp_path)
    weights = load_file(path)
    change(weights, tiny_gemma)
    save_file(weights, path)
    _refused(tiny_gemma, path, match)


def test_saved_memory_is_listed_and_checked(tiny_gemma, tmp_path):
    """A method's memory tensors (AlphaEdit's keys) are listed with their hashes when saved."""
    from workbench.editing.handle import commit_weights
    from workbench.editing.optimize import value_param

    name, param = value_param(tiny_gemma, 1)
    keys = torch.randn(tiny_gemma.d_mlp, 2)
    h = commit_weights(tiny_gemma, "alphaedit", [1], [FACT.to_dict()], lambda: {name: param.detach() + 0.01},
                       memory={"keys.L1": keys})
    path = h.save(tmp_path / "a")
    h.revert()
    loaded = wb.load_edit(tiny_gemma, path)
    assert torch.equal(loaded.memory["keys.L1"], keys)
    loaded.revert()
    weights = load_file(path)
    _memory_changed(weights, tiny_gemma)
    save_file(weights, path)
    _refused(tiny_gemma, path, r"memory tensor 'memory::keys\.L1' is not what was saved")


def test_an_edit_that_fails_as_it_is_applied_leaves_nothing(tiny_gemma):
    """A malformed argument to commit_weights, or a failure on the stack, after the weights
    were computed: nothing written stays written, nothing goes on the stack."""
    import workbench.editing.handle as handle_module

    from workbench.editing.optimize import value_param

    params = dict(value_param(tiny_gemma, layer) for layer in (1, 2))
    names = list(params)
    snap = _snapshot(tiny_gemma)
    with pytest.raises(TypeError):
        handle_module.commit_weights(tiny_gemma, "ft", 5, [], lambda: {n: params[n].detach() + 1 for n in names})
    assert _same(tiny_gemma, snap) and wb.active_edits(tiny_gemma) == []

    class FailingStack(list):
        def append(self, item):
            raise KeyboardInterrupt

    real = handle_module._stack
    try:
        handle_module._stack = lambda model: FailingStack()
        with pytest.raises(KeyboardInterrupt):
            handle_module.commit_weights(tiny_gemma, "ft", [1], [], lambda: {n: params[n].detach() + 1 for n in names})
    finally:
        handle_module._stack = real
    assert _same(tiny_gemma, snap) and wb.active_edits(tiny_gemma) == []


# -- 2. caches hold what the unedited model gives ------------------------------------------


def test_key_statistics_are_computed_on_the_unedited_weights(tiny_gemma, tmp_path, monkeypatch):
    from workbench.editing import stats

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    clean = stats.second_moment(tiny_gemma, 2, samples=300)
    path = stats._path(tiny_gemma, 2, "stats", 300)
    path.unlink()
    snap = _snapshot(tiny_gemma)
    wb.edit(tiny_gemma, FACT, method="ft", **FT_FAST)
    wb.edit(tiny_gemma, FACT, method="in-context", min_prob=0)
    edited = _snapshot(tiny_gemma)
    assert not _same(tiny_gemma, snap)
    assert torch.equal(stats.second_moment(tiny_gemma, 2, samples=300), clean)
    assert torch.equal(torch.load(path, weights_only=True).double(), clean)
    assert _same(tiny_gemma, edited) and len(wb.active_edits(tiny_gemma)) == 2
    assert len(tiny_gemma.prompt_edits) == 1


def test_context_prefixes_are_generated_by_the_unedited_model(tiny_gemma, tmp_path, monkeypatch):
    from workbench.editing.optimize import context_prefixes

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    clean = context_prefixes(tiny_gemma, 3)
    for f in (tmp_path / "prefixes").iterdir():
        f.unlink()
    wb.edit(tiny_gemma, FACT, method="in-context", min_prob=0)
    assert context_prefixes(tiny_gemma, 3) == clean
    assert len(tiny_gemma.prompt_edits) == 1


def test_a_prefix_file_of_huge_or_odd_entries_is_rebuilt(tiny_gemma, tmp_path, monkeypatch, caplog):
    from workbench.editing.optimize import context_prefixes

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    clean = context_prefixes(tiny_gemma, 2)
    (path,) = (tmp_path / "prefixes").iterdir()
    for bad in (["word " * 5000 + ". "] * 2, ["The {} broke it. ", "The end. "], ["The end. "] * 3, ["", "The end. "]):
        path.write_text(json.dumps(bad))
        assert context_prefixes(tiny_gemma, 2) == clean
        assert json.loads(path.read_text()) == clean
    assert "prefix" in caplog.text and "again" in caplog.text


def _fake_gguf(monkeypatch, tmp_path, tokenizer, *, garbage_each_time: str | None = None) -> list:
    """Make 'fake-gguf' a built-in converted model whose conversion writes a tiny Llama."""
    import workbench.core.loading as loading
    from workbench.core.architecture import tiny_config
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    monkeypatch.setitem(loading._GGUF_MODELS, "fake-gguf", ("unused", "unused.gguf"))
    conversions: list = []

    def convert(name, out):
        conversions.append(name)
        AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=len(tokenizer))).save_pretrained(out)
        tokenizer.save_pretrained(out)
        if garbage_each_time:
            (out / garbage_each_time).write_text("{ not json")

    monkeypatch.setattr(loading, "_convert_gguf", convert)
    return conversions


@pytest.mark.parametrize("garbage", ["tokenizer.json", "tokenizer_config.json"])
def test_garbage_tokenizer_files_in_the_converted_model_are_converted_again(tiny_llama, tmp_path, monkeypatch,
                                                                             caplog, garbage):
    import workbench.core.loading as loading

    conversions = _fake_gguf(monkeypatch, tmp_path, tiny_llama.tokenizer)
    folder = loading.converted_dir("fake-gguf")
    (folder / garbage).write_text("{ not json")
    assert len(loading.load_tokenizer("fake-gguf")) == len(tiny_llama.tokenizer)
    assert conversions == ["fake-gguf", "fake-gguf"] and garbage in caplog.text
    (folder / garbage).write_bytes(b"\xff\xfe")
    loading.load_hf("fake-gguf", dtype=torch.float32)
    assert len(conversions) == 3


def test_a_conversion_that_keeps_writing_garbage_is_one_line(tiny_llama, tmp_path, monkeypatch):
    import workbench.core.loading as loading

    conversions = _fake_gguf(monkeypatch, tmp_path, tiny_llama.tokenizer, garbage_each_time="tokenizer_config.json")
    # The first converts twice; the second finds the broken folder left there and converts once.
    for load, n in ((lambda: loading.load_tokenizer("fake-gguf"), 2),
                    (lambda: loading.load_hf("fake-gguf", dtype=torch.float32), 1)):
        conversions.clear()
        with pytest.raises(UnknownModelError, match=r"tokenizer_config\.json.*even after converting it again") as exc:
            load()
        assert str(tmp_path / "models" / "fake-gguf") in _one_line(exc) and conversions == ["fake-gguf"] * n
        assert "remove that folder" in str(exc.value)


def test_stale_temporary_folders_of_a_killed_conversion_are_removed(tiny_llama, tmp_path, monkeypatch):
    import workbench.core.loading as loading

    _fake_gguf(monkeypatch, tmp_path, tiny_llama.tokenizer)
    models = tmp_path / "models"
    models.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    dead_pid = models / f".tmp-fake-gguf-{int(dead.stdout)}@{host}-abc123"
    running = models / f".tmp-fake-gguf-{os.getpid()}@{host}-def456"
    old = models / ".tmp-fake-gguf-k2j3h4"  # from before pids were kept: judged by age
    fresh = models / ".tmp-fake-gguf-zz99aa"
    other_model = models / f".tmp-other-{int(dead.stdout)}@{host}-abc123"
    for folder in (dead_pid, running, old, fresh, other_model):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    loading.converted_dir("fake-gguf")
    assert not dead_pid.exists() and not old.exists()
    assert running.exists() and fresh.exists() and other_model.exists()


# -- 3. cache locations that cannot be used -------------------------------------------------


def test_a_cache_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    from workbench.runtime.cache import cache_dir

    plain = tmp_path / "plain-file"
    plain.write_text("not a folder")
    monkeypatch.setenv("WORKBENCH_CACHE", str(plain))
    with pytest.raises(WorkbenchError, match="WORKBENCH_CACHE") as exc:
        cache_dir("stats")
    assert str(plain) in _one_line(exc)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC], ids=["read-only", "no-permission", "full"])
def test_an_unwritable_cache_is_one_line(tiny_llama, tmp_path, monkeypatch, code):
    """Simulated (the tests may run as root, who can write to read-only folders)."""
    import tempfile

    from workbench.runtime.cache import build_atomically, cache_dir, write_file_atomically

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    folder = cache_dir("prefixes")

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    real = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(WorkbenchError, match="WORKBENCH_CACHE") as exc:
        write_file_atomically(folder / "x.json", b"[]")
    assert str(tmp_path) in _one_line(exc) and os.strerror(code) in str(exc.value)
    monkeypatch.setattr(tempfile, "mkstemp", real)

    def build(tmp):
        raise OSError(code, os.strerror(code))

    with pytest.raises(WorkbenchError, match="WORKBENCH_CACHE") as exc:
        build_atomically(cache_dir("models") / "m", build)
    assert str(tmp_path) in _one_line(exc) and not (tmp_path / "models" / "m").exists()
    # A file outside the cache (a saved edit) keeps its own error.
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    with pytest.raises(OSError) as raw:
        write_file_atomically(outside / "e.json", b"{}")
    assert not isinstance(raw.value, WorkbenchError)


def test_an_empty_cache_variable_is_unset(tmp_path, monkeypatch):
    from workbench.runtime.cache import cache_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORKBENCH_CACHE", "")
    monkeypatch.chdir(tmp_path)
    assert cache_dir("stats") == tmp_path / "home" / ".cache" / "workbench" / "stats"
    assert not (tmp_path / "stats").exists()
