"""Nothing lost, nothing hidden: what a careless user or a broken file does, and what the
workbench does then. Each test names the numbered item of the reliability issue it
reproduces; bad input gets one specific line (exit code 2 in the CLI), the weights stay
bitwise as they were, and files that existed are intact.
"""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch

import workbench as wb
from workbench.cli import main
from workbench.errors import WorkbenchError

FACT = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
# min_prob=0: a random tiny model never reaches the new object; these tests are about files.
ROME_FAST = dict(layers=[1], samples=1500, n_prefixes=1, n_key_prefixes=1, steps=2, check_known=False, min_prob=0)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, snap) -> bool:
    return all(torch.equal(snap[k], v) for k, v in model.state_dict().items())


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


# -- 1. saving an edit never destroys a file -------------------------------------------


def test_save_refuses_to_overwrite_and_keeps_other_files(tiny_gemma, tmp_path):
    notes = tmp_path / "notes.safetensors"
    notes_meta = tmp_path / "notes.safetensors.json"
    notes.write_bytes(b"mine")
    notes_meta.write_text("mine too")
    with wb.edit(tiny_gemma, FACT, method="rome", **ROME_FAST) as h:
        # "notes.txt" gets ".safetensors" appended; it no longer replaces the suffix.
        path = h.save(tmp_path / "notes.txt")
        assert path.name == "notes.txt.safetensors"
        assert notes.read_bytes() == b"mine" and notes_meta.read_text() == "mine too"
        with pytest.raises(WorkbenchError, match="already exists.*overwrite=True"):
            h.save(path)
        with pytest.raises(WorkbenchError, match="already exists"):
            h.save(notes)
        assert notes.read_bytes() == b"mine"
        h.save(path, overwrite=True)


def test_a_failed_metadata_write_leaves_no_file(tiny_gemma, tmp_path, monkeypatch):
    import workbench.editing.handle as handle_module

    with wb.edit(tiny_gemma, FACT, method="rome", **ROME_FAST) as h:
        def failing(path, data):
            raise OSError("disk full")

        monkeypatch.setattr(handle_module, "write_file_atomically", failing)
        with pytest.raises(OSError):
            h.save(tmp_path / "e")
    assert list(tmp_path.iterdir()) == []


def test_a_reverted_edit_cannot_be_saved(tiny_gemma, tmp_path):
    h = wb.edit(tiny_gemma, FACT, method="rome", **ROME_FAST)
    h.revert()
    with pytest.raises(WorkbenchError, match="reverted"):
        h.save(tmp_path / "e")


# -- 2. two handles of one file are two edits -----------------------------------------


def test_two_loads_of_one_in_context_file_revert_separately(tiny_llama, tmp_path):
    from workbench.editing.incontext import InContextEdit

    with wb.edit(tiny_llama, FACT, method="in-context", min_prob=0) as h:
        path = h.save(tmp_path / "ic")
    first = wb.load_edit(tiny_llama, path, prompt_edit_loader=InContextEdit.from_dict)
    second = wb.load_edit(tiny_llama, path, prompt_edit_loader=InContextEdit.from_dict)
    assert first != second and len(tiny_llama.prompt_edits) == 2
    second.revert()
    assert tiny_llama.prompt_edits == [first.prompt_edit] and first.prompt_edit is tiny_llama.prompt_edits[0]
    assert wb.revert_all(tiny_llama) == 1
    assert tiny_llama.prompt_edits == []


# -- 3. non-finite weights and non-finite numbers ---------------------------------------


def _save_tiny_llama(tokenizer, folder) -> None:
    """A fresh tiny Llama saved like a Hugging Face checkpoint (a booted bridge cannot be saved)."""
    from transformers import AutoModelForCausalLM

    from workbench.core.architecture import tiny_config

    AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_a_model_folder_with_nan_weights_is_refused(tiny_llama, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "broken"
    _save_tiny_llama(tiny_llama.tokenizer, folder)

    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if k.endswith("mlp.down_proj.weight"))
    weights[name][0, 0] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(wb.UnknownModelError, match=r"NaN or infinite weights in .*down_proj"):
        wb.load_model(str(folder))


def test_a_corrupt_converted_model_is_converted_again(tiny_llama, tmp_path, monkeypatch, caplog):
    """A built-in model's cached conversion that holds NaN (or cannot be read) is rebuilt once."""
    import workbench.core.loading as loading

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    monkeypatch.setitem(loading._GGUF_MODELS, "fake-gguf", ("unused", "unused.gguf"))
    conversions = []

    def convert(name, out):
        conversions.append(name)
        _save_tiny_llama(tiny_llama.tokenizer, out)

    monkeypatch.setattr(loading, "_convert_gguf", convert)
    loading.converted_dir("fake-gguf")
    target = tmp_path / "models" / "fake-gguf"
    (target / "model.safetensors").write_bytes(b"truncated")
    model, _, _ = loading.load_hf("fake-gguf", dtype=torch.float32)
    assert conversions == ["fake-gguf", "fake-gguf"]
    assert loading.non_finite_parameter(model) is None
    assert "corrupt" in caplog.text and "converting it again" in caplog.text


def test_json_output_refuses_nan():
    from workbench.cli.arguments import json_text

    assert json.loads(json_text({"p": 0.5})) == {"p": 0.5}
    with pytest.raises(WorkbenchError, match="NaN or infinity, which is not valid JSON"):
        json_text({"prob": float("nan")})


# -- 4. a top-k that would fill memory -------------------------------------------------


def test_huge_top_k_is_refused_before_work(tiny_llama, capsys):
    with pytest.raises(WorkbenchError, match=r"top_k must be a whole number between 1 and 1000"):
        wb.lens(tiny_llama, "The Eiffel Tower is in", top_k=100_000_000)
    with pytest.raises(WorkbenchError, match=r"top_k must be a whole number between 0 and 1000"):
        wb.probe(tiny_llama, "The Eiffel Tower is in", top_k=10**9)
    assert main(["lens", "--prompt", "The Eiffel Tower is in", "--top-k", "100000000", "--model", "tiny-llama"]) == 2
    assert "--top-k must be a whole number between 1 and 1000" in _one_line(capsys)
    assert main(["probe", "The Eiffel Tower is in", "--top-k", "100000000", "--model", "tiny-llama"]) == 2
    assert "--top-k" in _one_line(capsys)


# -- 5. caches that check what they read -------------------------------------------------


def test_corrupt_key_statistics_are_recomputed(tiny_llama, tmp_path, monkeypatch):
    from workbench.editing import stats

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    good = stats.second_moment(tiny_llama, 1, samples=300)
    path = stats._path(tiny_llama, 1, "stats", 300)
    for bad in (torch.zeros(3, 3), torch.full((tiny_llama.d_mlp,) * 2, float("nan")), "not a tensor"):
        torch.save(bad, path)
        again = stats.second_moment(tiny_llama, 1, samples=300)
        assert torch.equal(again, good)
    path.write_bytes(b"\x00truncated")
    assert torch.equal(stats.second_moment(tiny_llama, 1, samples=300), good)
    # A number changed but still finite and in shape: only the saved SHA-256 can tell.
    stats.second_moment(tiny_llama, 1, samples=300)
    C = torch.load(path, weights_only=True)
    C[0, 0] += 1.0
    torch.save(C, path)
    assert torch.equal(stats.second_moment(tiny_llama, 1, samples=300), good)


def test_corrupt_key_contexts_and_prefixes_are_rebuilt(tiny_llama, tmp_path, monkeypatch):
    from workbench.editing.optimize import context_prefixes
    from workbench.locate import keycontexts

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    first = keycontexts.top_contexts(tiny_llama, 1, n_texts=4, max_tokens=16, top_n=2)[1]
    path = keycontexts._cache_path(tiny_llama, 1, 4, 16, 2)
    path.write_bytes(b"garbage, not a torch file")
    again = keycontexts.top_contexts(tiny_llama, 1, n_texts=4, max_tokens=16, top_n=2)[1]
    assert torch.equal(again.top_values, first.top_values)
    torch.save({"layer": 1}, path)
    assert torch.equal(keycontexts.top_contexts(tiny_llama, 1, n_texts=4, max_tokens=16, top_n=2)[1].top_where,
                       first.top_where)

    prefixes = context_prefixes(tiny_llama, 2)
    cached = next((tmp_path / "prefixes").glob("*_2_*.json"))
    cached.write_bytes(b"\xff\xfe not utf-8")
    assert context_prefixes(tiny_llama, 2) == prefixes


# -- 6. long runs keep their work -----------------------------------------------------------


def _known(model, n):
    facts = []
    for s in ["Paris", "Tokyo", "Berlin", "Rome", "Madrid", "Cairo"][:n]:
        top = wb.probe(model, f"{s} is the capital of", top_k=1)[0].top[0].token.strip()
        facts.append(wb.Fact(s, "{} is the capital of", top, "Mars Station"))
    return facts


EVAL_FAST = dict(every=2, perplexity_texts=2, perplexity_tokens=24, fluency_tokens=4, fluency_prompts=2)


def _ctrl_c_at_scoring(monkeypatch, call: int):
    """Make evaluate's ``call``-th score_fact raise KeyboardInterrupt (Ctrl-C mid-run); returns the module."""
    import sys

    ev = sys.modules["workbench.evaluation.independent"]
    real, calls = ev.score_fact, {"n": 0}

    def interrupting(*a, **k):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ev, "score_fact", interrupting)
    return ev, real


def test_ctrl_c_in_evaluate_hands_up_what_was_done(tiny_llama, monkeypatch, tmp_path):
    from workbench.evaluation import EvaluationInterrupted

    facts = _known(tiny_llama, 5)
    ev, real = _ctrl_c_at_scoring(monkeypatch, 3)
    with pytest.raises(EvaluationInterrupted) as stop:
        wb.evaluate(tiny_llama, facts, method="in-context", **EVAL_FAST)
    part = stop.value.report
    assert isinstance(stop.value, KeyboardInterrupt)
    assert part.summary["n"] == 2 and part.summary["interrupted"] and part.summary["stopped_early"]
    assert tiny_llama.prompt_edits == [] and wb.active_edits(tiny_llama) == []
    monkeypatch.setattr(ev, "score_fact", real)
    done = wb.evaluate(tiny_llama, facts, method="in-context", resume=part, **EVAL_FAST)
    assert done.summary["n"] == 5 and [r.subject for r in done.rows] == [f.subject for f in facts]


def test_cli_evaluate_writes_the_partial_report_on_ctrl_c(tiny_llama, monkeypatch, tmp_path, capsys):
    data = tmp_path / "facts.json"
    wb.write_facts(_known(tiny_llama, 3), data)
    report = tmp_path / "r.json"
    _ctrl_c_at_scoring(monkeypatch, 2)
    rc = main(["evaluate", "--method", "in-context", "--dataset", str(data), "--model", "tiny-llama",
               "--report", str(report), "--every", "2", "--perplexity-texts", "2", "--fluency-tokens", "4"])
    assert rc == 130
    assert "--resume" in _one_line(capsys)
    assert wb.read_report(report).summary["n"] == 1


def test_missing_output_folders_fail_before_the_run(tmp_path, capsys):
    data = tmp_path / "facts.json"
    wb.write_facts([FACT], data)
    missing = tmp_path / "no" / "such" / "dir"
    assert main(["evaluate", "--method", "in-context", "--dataset", str(data), "--model", "tiny-llama",
                 "--json", str(missing / "x.json")]) == 2
    assert "does not exist (nothing was run)" in _one_line(capsys)
    assert main(["edit", "--model", "tiny-gemma3", "--subject", "Eiffel Tower", "--prompt",
                 "The {} is located in the city of", "--target-new", "Rome", "--save", str(missing / "e")]) == 2
    assert "does not exist (nothing was run)" in _one_line(capsys)


# -- 7. the app server: a token, loopback hosts, the real port, no orphaned server -------------
# (The host check and the token against a running server: tests/browser/test_voila.py.)


def test_app_command_has_a_token_host_check_and_one_kernel(capsys):
    assert main(["app", "--dry-run", "--port", "8899"]) == 0
    cmd = capsys.readouterr().out
    assert "workbench.cli.voila_server" in cmd and "--Voila.port_retries=0" in cmd
    assert "NewestKernelOnly" in cmd and "--Voila.ip=127.0.0.1" in cmd
    token = next(part for part in cmd.split() if part.startswith("--token=")).split("=", 1)[1]
    assert len(token) >= 24
    assert main(["app", "--dry-run"]) == 0
    assert token not in capsys.readouterr().out  # a new random token every time
    assert main(["app", "--dry-run", "--token", "bad token!"]) == 2


def test_app_refuses_a_busy_port(capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["app", "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in _one_line(capsys)


def _serve_a_sleeping_child(tmp_path):
    """`serve` (as `workbench app` runs it) in a subprocess, over a child that only sleeps:
    the serving process and the child's pid once it has started."""
    import subprocess
    import time

    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    parent = (f"import sys; from workbench.cli.app import serve; "
              f"sys.exit(serve([sys.executable, '-c', {child!r}], dict()))")
    proc = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.time() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    return proc, int(pid_file.read_text())


def test_app_stops_its_server_when_stopped(tmp_path):
    """SIGTERM to `workbench app` ends the server child too, instead of orphaning it."""
    import os
    import signal
    import time

    proc, child_pid = _serve_a_sleeping_child(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_app_server_dies_when_the_app_is_killed(tmp_path):
    """SIGKILL to `workbench app` (no handler runs) still ends the server: the kernel signals it."""
    import os
    import time

    proc, child_pid = _serve_a_sleeping_child(tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"the server child {child_pid} outlived the killed app")


def test_kernel_starts_are_taken_one_at_a_time():
    """Ten pages starting kernels together leave one kernel, never ten (the starts are serialised)."""
    import asyncio

    from workbench.cli.voila_server import NewestKernelOnly

    alive: set[int] = set()
    most, made = 0, 0

    class Fake(NewestKernelOnly):
        def list_kernel_ids(self):
            return list(alive)

        async def shutdown_kernel(self, kernel_id, now=False, restart=False):
            await asyncio.sleep(0.01)
            alive.discard(kernel_id)

    async def started(self, *args, **kwargs):
        nonlocal most, made
        await asyncio.sleep(0.02)  # a kernel takes a while to start: the window the race used
        made += 1
        alive.add(made)
        most = max(most, len(alive))
        return "k"

    async def main():
        manager = Fake()
        original = NewestKernelOnly.__mro__[1].start_kernel
        NewestKernelOnly.__mro__[1].start_kernel = started
        try:
            await asyncio.gather(*(manager.start_kernel() for _ in range(10)))
        finally:
            NewestKernelOnly.__mro__[1].start_kernel = original

    asyncio.run(main())
    assert most == 1 and len(alive) == 1


def test_app_page_template_ships_with_the_package(capsys):
    """`workbench app` serves its page with the package's Voila template (the kernel watch),
    and a non-editable install carries the template's files (pyproject's package-data)."""
    import fnmatch
    import tomllib
    from pathlib import Path

    from workbench.cli.app import VOILA_TEMPLATE

    assert main(["app", "--dry-run"]) == 0
    assert f"--template={VOILA_TEMPLATE}" in capsys.readouterr().out.split()
    package = Path(wb.__file__).resolve().parent
    folder = package / "cli" / "voila_templates" / "voila" / "templates" / VOILA_TEMPLATE
    assert json.loads((folder / "conf.json").read_text())["base_template"] == "lab"
    page = (folder / "index.html.j2").read_text()
    assert "workbench/kernel/" in page and "moved to another tab" in page and "kernel stopped" in page
    config = tomllib.loads((package.parent / "pyproject.toml").read_text())
    shipped = config["tool"]["setuptools"]["package-data"]["workbench"]
    for path in folder.iterdir():
        name = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(name, pattern) for pattern in shipped), f"{name} is not package data"


def test_kernel_state_tells_a_replaced_kernel_from_a_stopped_one():
    """What a page learns about its kernel: alive; replaced (a newer page took it); stopped
    (died, restarted after a crash, or unknown)."""
    import asyncio

    from workbench.cli.voila_server import NewestKernelOnly

    restarts: dict[str, object] = {}

    class Kernel:
        def __init__(self):
            self.alive = True

        async def is_alive(self):
            return self.alive

    class Fake(NewestKernelOnly):
        kernels: dict[str, Kernel] = {}

        def list_kernel_ids(self):
            return list(self.kernels)

        def __contains__(self, kernel_id):
            return kernel_id in self.kernels

        def get_kernel(self, kernel_id):
            return self.kernels[kernel_id]

        def add_restart_callback(self, kernel_id, callback, event="restart"):
            restarts[kernel_id] = callback

        async def shutdown_kernel(self, kernel_id, now=False, restart=False):
            self.kernels.pop(kernel_id)

    made = iter(["k1", "k2", "k3"])

    async def started(self, *args, **kwargs):
        kernel_id = next(made)
        Fake.kernels[kernel_id] = Kernel()
        return kernel_id

    async def main():
        manager = Fake()
        original = NewestKernelOnly.__mro__[1].start_kernel
        NewestKernelOnly.__mro__[1].start_kernel = started
        try:
            first = await manager.start_kernel()
            assert await manager.kernel_state(first) == "alive"
            second = await manager.start_kernel()
            states = [await manager.kernel_state(k) for k in (first, second, "never-seen")]
            assert states == ["replaced", "alive", "stopped"]
            Fake.kernels[second].alive = False  # its process died
            assert await manager.kernel_state(second) == "stopped"
            Fake.kernels[second].alive = True
            restarts[second]()  # ... and the restarter started a fresh one: the page's widgets are gone
            assert await manager.kernel_state(second) == "stopped"
            third = await manager.start_kernel()
            assert await manager.kernel_state(second) == "stopped"  # it ended before it was replaced
            assert await manager.kernel_state(third) == "alive"
        finally:
            NewestKernelOnly.__mro__[1].start_kernel = original

    asyncio.run(main())


@pytest.mark.timeout(240)
def test_app_server_tells_a_page_that_its_kernel_moved(tmp_path):
    """Against the real server (a one-cell notebook): the page carries the kernel watch, and
    the server answers it — alive, then replaced once a second page took the kernel, stopped
    when the kernel died; with the token and a loopback host only."""
    import os
    import re
    import signal
    import socket
    import subprocess
    import time
    import urllib.error
    import urllib.request
    from argparse import Namespace
    from unittest import mock

    pytest.importorskip("voila")
    nbformat = pytest.importorskip("nbformat")
    from workbench.cli import app

    notebook = tmp_path / "app.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('ready')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(notebook))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mock.patch.object(app, "notebook_path", return_value=notebook):
        cmd = app.command(Namespace(port=port, lab=False), "tok")
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def get(path, headers=None):
        request = urllib.request.Request(base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    def kernel_of(html):
        found = re.search(r'id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
        return json.loads(found.group(1))["kernelId"]

    def state(kernel_id):
        status, body = get(f"/workbench/kernel/{kernel_id}?token=tok")
        assert status == 200, status
        return json.loads(body)["state"]

    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not listen"
                time.sleep(0.2)
        status, first_page = get("/?token=tok")
        assert status == 200 and "workbench/kernel/" in first_page and "ready" in first_page
        for url in re.findall(r'(?:src|href)="(/voila/[^"]+)"', first_page):
            assert get(url)[0] == 200, url  # the template's styles and scripts are served
        first = kernel_of(first_page)
        assert state(first) == "alive"
        assert get(f"/workbench/kernel/{first}")[0] == 403  # no token
        assert get(f"/workbench/kernel/{first}?token=tok", {"Host": f"evil.example:{port}"})[0] == 403
        second = kernel_of(get("/?token=tok")[1])
        assert (state(first), state(second)) == ("replaced", "alive")
        if sys.platform == "linux":
            children = open(f"/proc/{server.pid}/task/{server.pid}/children").read().split()
            os.kill(int(children[-1]), signal.SIGKILL)  # the one kernel dies
            deadline = time.monotonic() + 30
            while state(second) != "stopped":
                assert time.monotonic() < deadline, "a dead kernel still reads as alive"
                time.sleep(0.2)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


# -- 8. settings that make a useless edit, and files that lie ------------------------------


@pytest.mark.parametrize("method, kwargs, match", [
    ("ft", {"linf": -1}, "linf must be a number > 0"),
    ("ft", {"lr": float("nan")}, "lr must be a number > 0, got nan"),
    ("ft", {"steps": 0}, "steps must be a whole number between 1"),
    ("ft", {"stepz": 3}, "unknown hyperparameter.*stepz.*ft takes steps, lr"),
    ("rome", {"clamp": -1.0}, "clamp must be a number > 0"),
    ("rome", {"weight_decay": -0.5}, "weight_decay must be a number >= 0"),
    ("rome", {"steps": "abc"}, "steps must be a whole number, got 'abc'"),
    ("rome", {"steps": 2.5}, "steps must be a whole number, got 2.5"),
    ("memit", {"mom2_weight": -1.0}, "mom2_weight must be a number > 0"),
    ("rome", {"layers": [4.7]}, "layer must be a whole number, got 4.7"),
    ("rome", {"layers": []}, "layers is empty"),
    ("rome", {"layers": ["abc"]}, "layer must be a whole number, got 'abc'"),
    ("in-context", {"template": "{x}"}, "the template has a field {x}"),
    ("kn", {"share": 2.0}, "share must be a number between 0 and 1"),
])
def test_bad_settings_are_refused_before_any_work(tiny_llama, method, kwargs, match):
    snap = _snapshot(tiny_llama)
    with pytest.raises(WorkbenchError, match=match):
        wb.edit(tiny_llama, FACT, method=method, **kwargs)
    assert _same(tiny_llama, snap) and wb.active_edits(tiny_llama) == [] and tiny_llama.prompt_edits == []


def test_an_edit_that_misses_its_target_is_refused_and_reverted(tiny_gemma):
    snap = _snapshot(tiny_gemma)
    with pytest.raises(WorkbenchError, match=r"the rome edit reached p\(Rome\) = .* below min_prob=0.05: it was reverted"):
        wb.edit(tiny_gemma, FACT, method="rome", **{**ROME_FAST, "min_prob": 0.05})
    other = wb.Fact("Steve Jobs", "{} was the founder of", "Apple", "Microsoft")
    with pytest.raises(WorkbenchError, match=r"p\(new\) >= 0.05 for only 0 of 2 facts"):
        wb.edit(tiny_gemma, [FACT, other], method="memit", layers=[1, 2], samples=1500, n_prefixes=1, steps=2,
                check_known=False)
    assert _same(tiny_gemma, snap) and wb.active_edits(tiny_gemma) == []
    with pytest.raises(WorkbenchError, match="min_prob must be a number between 0 and 1"):
        wb.edit(tiny_gemma, FACT, method="rome", **{**ROME_FAST, "min_prob": 2})
    kept = wb.edit(tiny_gemma, FACT, method="rome", **ROME_FAST)  # min_prob=0 keeps it
    assert kept.active
    kept.revert()


@pytest.mark.slow
def test_a_runaway_learning_rate_is_refused_on_the_default_model(gemma):
    """The issue's case: lr=1e9 ended far from the new object and was committed."""
    snap = _snapshot(gemma)
    with pytest.raises(WorkbenchError, match="below min_prob"):
        # Three steps are enough to throw the search far off (and cost a tenth of the default 25).
        wb.edit(gemma, FACT, method="rome", lr=1e9, steps=3)
    assert _same(gemma, snap) and wb.active_edits(gemma) == []


def test_one_subject_two_targets_is_found_through_spacing(tiny_llama):
    spaced = wb.Fact("Eiffel Tower ", "The {} is located in the city of ", "Paris", "Berlin")
    with pytest.raises(WorkbenchError, match="two different new objects"):
        wb.edit(tiny_llama, [FACT, spaced], method="memit", layers=[1, 2])
    reworded = wb.Fact("Eiffel Tower", "Where is the {}? It is in", "Paris", "Berlin")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from workbench.editing import check_facts

        check_facts([FACT, reworded])
    assert any("replace the same true object" in str(w.message) for w in caught)


def test_a_saved_edit_that_lies_about_its_weights_is_refused(tiny_gemma, tmp_path):
    from safetensors.torch import load_file, save_file

    with wb.edit(tiny_gemma, FACT, method="rome", **ROME_FAST) as h:
        path = h.save(tmp_path / "e")
    meta_path = tmp_path / "e.safetensors.json"
    meta = json.loads(meta_path.read_text())
    snap = _snapshot(tiny_gemma)

    emptied = {**meta, "before_hashes": {}}
    meta_path.write_text(json.dumps(emptied))
    with pytest.raises(WorkbenchError, match="before_hashes disagree"):
        wb.load_edit(tiny_gemma, path)

    meta_path.write_text(json.dumps(meta))
    weights = load_file(path)
    (edited,) = weights
    params = dict(tiny_gemma.hf_model.named_parameters(remove_duplicate=False))
    extra = edited.replace("layers.1.", "layers.2.")  # the same matrix one block up, not listed in the metadata
    weights[extra] = params[extra].detach().clone() + 1
    save_file(weights, path)
    with pytest.raises(WorkbenchError, match=f"before_hashes disagree.*{extra}"):
        wb.load_edit(tiny_gemma, path)

    meta_path.write_bytes(b"\xff\xfe")
    with pytest.raises(WorkbenchError, match="not JSON"):
        wb.load_edit(tiny_gemma, path)
    assert _same(tiny_gemma, snap) and wb.active_edits(tiny_gemma) == []


@pytest.mark.slow
def test_a_made_up_subject_gets_a_warning(gemma):
    made_up = wb.Fact("Zxqv Blorp", "{} was born in the city of", "Paris", "Rome")
    with pytest.warns(UserWarning, match="does not know the fact"):
        from workbench.editing.optimize import warn_if_unknown

        warn_if_unknown(gemma, [made_up])


# -- 9. what --json readers were not told ---------------------------------------------------


def test_trace_json_carries_the_warnings(capsys):
    assert main(["trace", "--model", "tiny-gemma3", "--subject", "Eiffel Tower", "--prompt",
                 "The {} is located in the city of", "--kind", "mlp", "--samples", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["warnings"]  # a random tiny model is never sure of its answer


def test_evaluate_with_a_layer_out_of_range_is_an_error(tmp_path, capsys):
    data = tmp_path / "facts.json"
    wb.write_facts([FACT], data)
    assert main(["evaluate", "--method", "rome", "--dataset", str(data), "--model", "tiny-llama",
                 "--layers", "999"]) == 2
    assert "layer 999 is out of range" in _one_line(capsys)


# -- 10. one specific line instead of a traceback -------------------------------------------


@pytest.mark.parametrize("template, match", [
    ("The {x} is in", "has a field {x}"),
    ("The {0} is in", "has a field {0}"),
    ("The {} and {} are in", "has 2 '{}' fields"),
    ("The { is in {}", "malformed"),
])
def test_bad_templates(template, match):
    with pytest.raises(WorkbenchError, match=match):
        wb.Fact("Eiffel Tower", template, "Paris", "Rome")


def test_non_utf8_dataset(tmp_path):
    bad = tmp_path / "facts.json"
    bad.write_bytes(b'[{"subject": "\xff"}]')
    with pytest.raises(wb.DatasetError, match="not UTF-8"):
        wb.read_facts(bad)


def test_cli_edit_blames_the_right_argument(capsys):
    assert main(["edit", "--model", "tiny-gemma3", "--subject", "", "--prompt", "The {} is in",
                 "--target-new", "Rome"]) == 2
    assert "--subject is empty" in _one_line(capsys)
    assert main(["edit", "--model", "tiny-gemma3", "--subject", "X", "--prompt", "The {x} is {}",
                 "--target-new", "Rome"]) == 2
    assert "has a field {x}" in _one_line(capsys)


def test_broken_model_folders_say_what_is_wrong(tmp_path, tiny_llama):
    only_config = tmp_path / "only-config"
    only_config.mkdir()
    tiny_llama.hf_model.config.save_pretrained(only_config)
    with pytest.raises(wb.UnknownModelError, match="weights or tokenizer files are missing") as exc:
        wb.load_model(str(only_config))
    assert "Hub" not in str(exc.value)
    broken = tmp_path / "broken-config"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(wb.UnknownModelError, match="config.json is not valid JSON"):
        wb.load_model(str(broken))


def test_long_prompts_are_refused_at_once(tiny_llama):
    long = "word " * 300 + "The Eiffel Tower is located in the city of"
    with pytest.raises(WorkbenchError, match="at most 256 tokens"):
        wb.trace(tiny_llama, (long, "Eiffel Tower"))
    with pytest.raises(WorkbenchError, match="at most 256 tokens"):
        wb.lens(tiny_llama, long)
    with pytest.raises(WorkbenchError, match="at most 256 tokens"):
        wb.edit(tiny_llama, wb.Fact("Eiffel Tower", "word " * 300 + "The {} is in", "Paris", "Rome"), method="rome")
