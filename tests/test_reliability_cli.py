"""Nothing unbounded, nothing lost at the end, nothing silently damaged: the command line's
side of the reliability issue (items 4, 6 and 8). Each test names the item it holds.

Every probe here must be refused in one line (exit 2) before the model loads, or keep what
a finished run made; the memory of each test is capped at 1 GB above what it starts with.
"""

from __future__ import annotations

import errno
import json
import resource
import signal
import sys
from pathlib import Path

import pytest

import workbench as wb
from workbench.cli import build_parser, main
from workbench.errors import WorkbenchError

FACT = wb.Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
TRACE = ["trace", "--model", "tiny-gemma3", "--subject", "Eiffel Tower", "--prompt", "The {} is located in"]
NEURONS = ["neurons", "--model", "tiny-gemma3", "--prompt", "The Eiffel Tower is in", "--target", "Paris"]
# A fast evaluate: in-context edits on tiny-llama, a little drift.
FAST = ["--method", "in-context", "--model", "tiny-llama", "--every", "2", "--perplexity-texts", "2",
        "--fluency-tokens", "4"]


@pytest.fixture(autouse=True)
def _one_gigabyte():
    """At most 1 GB more data (private writable memory) than the test starts with: a probe that would allocate
    gigabytes fails here instead of swapping the machine."""
    size = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmData:"))
    old = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (size + 2**30, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, old)


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model is a failure: what is refused must be refused before the load."""
    import workbench.core.model

    def refuse(*a, **k):
        raise AssertionError("the model was loaded: the refusal came too late")

    monkeypatch.setattr(workbench.core.model, "load_model", refuse)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def _known(model, n):
    facts = []
    for s in ["Paris", "Tokyo", "Berlin", "Rome"][:n]:
        top = wb.probe(model, f"{s} is the capital of", top_k=1)[0].top[0].token.strip()
        facts.append(wb.Fact(s, "{} is the capital of", top, "Mars Station"))
    return facts


# -- 4. every number has an upper bound, refused before the work ------------------------


def test_every_numeric_option_of_every_command_has_a_declared_range():
    from workbench.cli.arguments import LIMITS

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    missing = [f"{name} --{a.dest}" for name, sub in commands.items() for a in sub._actions
               if a.type in (int, float) and a.dest not in LIMITS.get(name, {})]
    assert missing == []
    # Options typed as text but numeric: checked by their command once parsed.
    assert "workers" in LIMITS["evaluate"] and "layers" in LIMITS["edit"]
    for limits in LIMITS.values():
        for limit in limits.values():
            assert limit.low < limit.high and limit.why


PROBES = {
    "evaluate --perplexity-texts 1e9": ["evaluate", *FAST, "--perplexity-texts", "1000000000"],
    "evaluate --perplexity-texts -1": ["evaluate", *FAST, "--perplexity-texts", "-1"],
    "trace --samples 1e8": [*TRACE, "--samples", "100000000"],
    "trace --samples 1e8 --method attribution": [*TRACE, "--samples", "100000000", "--method", "attribution"],
    "neurons --steps 1e9": [*NEURONS, "--steps", "1000000000"],
    "evaluate --workers 100000": ["evaluate", *FAST, "--workers", "100000"],
    "evaluate --fluency-tokens 1e9": ["evaluate", *FAST, "--fluency-tokens", "1000000000"],
    "evaluate --fluency-tokens -1": ["evaluate", *FAST, "--fluency-tokens", "-1"],
    "trace --seed 2**64+1": [*TRACE, "--seed", str(2**64 + 1)],
}


@pytest.mark.parametrize("argv", PROBES.values(), ids=PROBES.keys())
def test_unbounded_numbers_are_refused_in_one_line_before_the_model_loads(argv, no_model, tmp_path, capsys):
    if argv[0] == "evaluate":
        data = tmp_path / "facts.json"
        wb.write_facts([FACT], data)
        argv = [*argv, "--dataset", str(data)]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert " must be a whole number between " in line and "(nothing was run)" in line, line


def test_the_library_calls_behind_them_have_the_same_upper_bounds(tiny_gemma):
    from workbench.cli.arguments import LIMITS
    from workbench.editing.search import MAX_STEPS as SEARCH_STEPS
    from workbench.editing.search import SearchParams
    from workbench.locate import neurons, trace_settings
    from workbench.locate.trace_settings import TraceSettings

    assert LIMITS["trace"]["samples"].high == trace_settings.MAX_SAMPLES
    assert LIMITS["trace"]["window"].high == trace_settings.MAX_WINDOW
    assert LIMITS["trace"]["noise"].high == trace_settings.MAX_NOISE
    assert LIMITS["trace"]["seed"].high == trace_settings.MAX_SEED
    assert LIMITS["neurons"]["steps"].high == neurons.MAX_STEPS
    for field, value in [("samples", 10**8), ("seed", 2**64 + 1), ("window", 10**6), ("noise", 1e9)]:
        with pytest.raises(WorkbenchError, match=field):
            TraceSettings(**{field: value})
    TraceSettings(samples=trace_settings.MAX_SAMPLES, seed=trace_settings.MAX_SEED)  # the bounds themselves pass
    with pytest.raises(WorkbenchError, match="samples"):
        wb.trace(tiny_gemma, ("The {} is located in", "Eiffel Tower"), samples=10**8, method="attribution")
    with pytest.raises(WorkbenchError, match="steps must be at most"):
        SearchParams(steps=10**12)
    SearchParams(steps=SEARCH_STEPS)
    before = {k: v.clone() for k, v in tiny_gemma.state_dict().items()}
    with pytest.raises(WorkbenchError, match="steps must be at most"):
        wb.edit(tiny_gemma, FACT, method="rome", steps=10**12, layers=[1], check_known=False, min_prob=0)
    assert all(v.equal(before[k]) for k, v in tiny_gemma.state_dict().items())
    with pytest.raises(WorkbenchError, match="steps must be at most"):
        neurons.knowledge_neurons(tiny_gemma, ["The Eiffel Tower is in"], "Paris", steps=10**9)


def test_edit_layers_given_as_text_are_bounded_too(no_model, capsys):
    assert main(["edit", "--subject", "Eiffel Tower", "--prompt", "The {} is in", "--target-new", "Rome",
                 "--layers", f"1,{10**30}"]) == 2
    assert "--layers must be a whole number between -1024 and 1023" in _one_line(capsys)


# -- 6. a finished run is never lost at the end; no file replaced by accident -------------


def _outputs(tmp_path) -> dict:
    data = tmp_path / "facts.json"
    wb.write_facts([FACT], data)
    mine = tmp_path / "notes.json"
    mine.write_text("my notes")
    folder = tmp_path / "a folder"
    folder.mkdir()
    return {"data": data, "mine": mine, "folder": folder}


@pytest.mark.parametrize("option", ["--report", "--json"])
@pytest.mark.parametrize("target, match", [
    ("data", "is an input of this run"),
    ("mine", "already exists; choose another file or give --overwrite"),
    ("folder", "is a folder"),
    ("/dev/full", "is not a regular file"),
    ("/proc/report.json", "cannot write in '/proc'"),
])
def test_outputs_that_cannot_or_must_not_be_written_are_refused_before_the_run(
        option, target, match, tmp_path, no_model, capsys):
    files = _outputs(tmp_path)
    path = str(files.get(target, target))
    assert main(["evaluate", *FAST, "--dataset", str(files["data"]), option, path]) == 2
    assert match in _one_line(capsys)
    assert files["mine"].read_text() == "my notes" and wb.read_facts(files["data"])[0] == FACT


def test_overwrite_never_replaces_the_dataset(tmp_path, no_model, capsys):
    files = _outputs(tmp_path)
    assert main(["evaluate", *FAST, "--dataset", str(files["data"]), "--report", str(files["data"]),
                 "--overwrite"]) == 2
    assert "is an input of this run" in _one_line(capsys)


def test_resume_into_the_same_report_and_overwrite_still_work(tiny_llama, tmp_path, capsys):
    data, report, mine = tmp_path / "facts.json", tmp_path / "r.json", tmp_path / "summary.json"
    wb.write_facts(_known(tiny_llama, 2), data)
    mine.write_text("old")
    base = ["evaluate", *FAST, "--dataset", str(data), "--report", str(report)]
    assert main([*base, "--limit", "1"]) == 0
    assert wb.read_report(report).summary["n"] == 1
    assert main([*base, "--resume", str(report), "--json", str(mine), "--overwrite"]) == 0
    assert wb.read_report(report).summary["n"] == 2
    assert json.loads(mine.read_text())["n"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    capsys.readouterr()


def test_a_write_that_fails_at_the_end_keeps_the_report_and_says_where(tiny_llama, tmp_path, monkeypatch, capsys):
    import workbench.runtime.outputs as outputs

    data, out = tmp_path / "facts.json", tmp_path / "out"
    out.mkdir()
    wb.write_facts(_known(tiny_llama, 1), data)
    real = outputs.write_atomically
    spare = tmp_path / "spare"
    spare.mkdir()

    def disk_full(path, text):
        if Path(path).parent == out:  # the disk filled up during the run
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(outputs, "write_atomically", disk_full)
    monkeypatch.setattr(outputs, "fallback_folders", lambda: [spare])
    rc = main(["evaluate", *FAST, "--dataset", str(data), "--report", str(out / "r.json"),
               "--json", str(out / "s.json")])
    assert rc == 2
    captured = capsys.readouterr()
    assert "efficacy" in captured.out  # the summary was still printed
    err = captured.err.strip()
    assert "\n" not in err and "No space left on device" in err and "it is kept in" in err, err
    assert list(out.iterdir()) == []  # no 0-byte or half-written file
    kept = sorted(spare.iterdir())
    assert len(kept) == 2 and str(kept[0]) in err and str(kept[1]) in err
    assert wb.read_report(next(p for p in kept if p.name.endswith("r.json"))).summary["n"] == 1


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    from workbench.runtime import outputs

    path = tmp_path / "r.json"
    path.write_text('{"old": true}')

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.os, "fsync", full)
    monkeypatch.setattr(outputs, "fallback_folders", lambda: [])
    with pytest.raises(outputs.OutputNotWritten, match="No space left on device"):
        outputs.write_output(path, '{"new": true}', "--report")
    assert path.read_text() == '{"old": true}' and list(tmp_path.iterdir()) == [path]


def test_edit_save_that_fails_keeps_the_edit_elsewhere(tmp_path, monkeypatch, capsys):
    import workbench.runtime.outputs as outputs
    from workbench.editing.handle import EditHandle

    real = EditHandle.save
    spare = tmp_path / "spare"
    spare.mkdir()

    def read_only(self, path, **kw):
        if Path(path).parent == tmp_path:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(self, path, **kw)

    monkeypatch.setattr(EditHandle, "save", read_only)
    monkeypatch.setattr(outputs, "fallback_folders", lambda: [spare])
    rc = main(["edit", "--model", "tiny-gemma3", "--method", "in-context", "--subject", "Eiffel Tower",
               "--prompt", "The {} is located in the city of", "--target-new", "Rome", "--target-true", "Paris",
               "--min-prob", "0", "--save", str(tmp_path / "e")])
    assert rc == 2
    captured = capsys.readouterr()
    assert "before:" in captured.out
    assert "Read-only file system" in captured.err and "it is saved in" in captured.err
    kept = [p for p in spare.iterdir() if p.suffix == ".safetensors"]
    assert len(kept) == 1 and str(kept[0]) in captured.err


def test_a_closed_terminal_sighup_writes_the_partial_report(tiny_llama, tmp_path, monkeypatch, capsys):
    import os

    ev = sys.modules["workbench.evaluation.independent"]
    real, calls = ev.score_fact, {"n": 0}

    def hang_up(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGHUP)
        return real(*a, **k)

    monkeypatch.setattr(ev, "score_fact", hang_up)
    # Were SIGHUP left to its default, it would kill the test run; ignored, the run goes on.
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        data, report = tmp_path / "facts.json", tmp_path / "r.json"
        wb.write_facts(_known(tiny_llama, 3), data)
        rc = main(["evaluate", *FAST, "--dataset", str(data), "--report", str(report)])
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # put back
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert rc == 130
    assert "--resume" in _one_line(capsys)
    assert wb.read_report(report).summary["n"] == 1


# -- 8. a lens that is not finite is refused, not printed as null or nan --------------------


@pytest.mark.parametrize("json_out", [True, False])
def test_a_lens_with_nan_is_refused(json_out, monkeypatch, capsys):
    import workbench.locate.lens  # noqa: F401 - the package's name `lens` is the function

    lens_module = sys.modules["workbench.locate.lens"]
    real = lens_module.lens

    def broken(*a, **k):
        r = real(*a, **k)
        r.top[1][-1][0].score = float("nan")
        return r

    monkeypatch.setattr(lens_module, "lens", broken)
    argv = ["lens", "--model", "tiny-gemma3", "--prompt", "The Eiffel Tower is in"]
    assert main(argv + (["--json"] if json_out else [])) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err and "not finite" in err and "after layer 1" in err, err


def test_the_limits_table_in_the_docs_lists_every_option():
    from workbench.cli.arguments import LIMITS

    text = (Path(__file__).resolve().parent.parent / "docs" / "gotchas.md").read_text()
    missing = [f"{c} --{o}" for c, d in LIMITS.items() for o in d
               if f"| `{c}` | `--{o.replace('_', '-')}` |" not in text]
    assert missing == []
