"""Lesson mode's data: about ten facts prepared ahead, the file they are kept in, and saved edits.

The strip that shows them (the switch and four step cards a lecturer walks through) is
:mod:`workbench.ui.lesson_strip`.

A lesson is a short list of facts the default model knows (the Eiffel Tower first). For each,
what the panels compute at their default settings is made once, ahead, from the real model:

- the Trace panel's exact trace (mlp, :data:`~workbench.ui.trace.DEFAULT_SAMPLES` samples);
- the Memories panel at the trace's peak (the subject's last token, the peak MLP layer: what a
  click on the heatmap's brightest cell there opens), the subject's lens at every layer, and
  the profile of the table's first key (what a click on that key shows);
- the Knockout panel's run (its default window, with the attribute rate);
- the letters' "before" column of "Did its knowledge change?" (sampled on the unedited model).

They are kept in ``assets/lesson/<model>.json`` (committed; ``python -m workbench.ui.lesson
--write``) or, when that file is missing or stale, in the workbench cache (``--cache``, which
``workbench app --lesson`` runs at set-up). A file is used only when its format version, model
name, weight fingerprint and settings are this code's and this model's; otherwise it is ignored
and the panel says why. With lesson mode on, choosing a lesson fact fills its tab's panel from the
file, then the other panels (no model call), each marked "prepared ahead", so that opening a tab
shows a figure already drawn; every Run button still recomputes, and any other setting computes
as before.

An edit is not quick on a CPU (ROME: about 4 s). ``--cache`` also saves each fact's edit at the
Edit panel's defaults in the cache, with the letters' "now" column sampled on it; Apply then loads
the edit (a fraction of a second) when the panel asks for exactly that edit on the unedited model,
and Generate letters shows those texts while the loaded weights are, hash for hash, the saved ones.

Example:
    >>> app = wb.Workbench(lesson=True)        # doctest: +SKIP
    >>> app.lesson.go(2)                       # "Where?": the Trace tab, the prepared trace   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.runtime.jsonfiles import read_json
from workbench.facts import ASSETS, Fact, bundled_facts
from workbench.locate import TraceSettings
from workbench.locate.enrichment import EnrichmentResult
from workbench.locate.keycontexts import KeyContext, KeyProfile
from workbench.locate.knockout import KnockoutResult
from workbench.locate.lens import TokenScore
from workbench.locate.memories import MemoryReport, SubUpdate
from workbench.locate.trace_result import TraceResult

#: What the file says it is; a file of another format or version is ignored (computed again).
FORMAT = "workbench-lesson"
#: Bump when what is stored, or how a panel computes it, changes.
VERSION = 1
#: Where the committed lessons lie, one file per model name.
SHIPPED = ASSETS / "lesson"
#: The lesson's facts after the Eiffel Tower: bundled facts the default model knows, by case id,
#: chosen for a class (subjects anyone recognises; places, languages, people, things).
CASES: tuple[str | int, ...] = (
    "known-81", 9021, "known-123", "known-292", "known-810", "known-112", "known-448", "known-456",
    "known-70",
)

#: The step cards: (title, what a lecturer reads out, the button, the tab it opens).
STEPS: tuple[tuple[str, str, str, str], ...] = (
    ("Does it know?",
     "Before we change anything: does the model know this fact? Its top answer, and the true "
     "object's rank and probability among all next tokens.", "Show the fact", "fact"),
    ("Where?",
     "Where is it recalled? Noise on the subject, then one hidden state restored at a time: the bright "
     "cells are where the answer comes back. Memories shows the FFN's largest sub-updates at the peak; "
     "Knockout shows where attention reads the subject.", "Trace", "trace"),
    ("Edit",
     "Rewrite the fact towards its new object with the Edit tab's default method, then read the card: "
     "before → after on the prompt, a paraphrase, a neighbour and an implication.", "Go to Edit", "edit"),
    ("Did its knowledge change?",
     "Does the new fact reach paraphrases and what follows from it, and leave neighbours alone? Then the "
     "letters: does the model write the new object when it writes freely about the subject?",
     "Probes", "probes"),
)
#: What the panels show on a prepared result (their Run button recomputes).
PREPARED = "prepared ahead for the lesson"


# -- what is prepared ----------------------------------------------------------------------------
def fact_key(fact: Fact) -> tuple:
    """What makes a fact the lesson's: subject, prompt and both objects (not its probe lines)."""
    return (fact.subject.strip(), fact.prompt.strip(), (fact.target_true or "").strip(),
            (fact.target_new or "").strip())


def lesson_facts() -> list[Fact]:
    """The lesson's facts in order: the Eiffel Tower example, then :data:`CASES` from the bundled facts."""
    from workbench.ui.fact import EXAMPLES

    by_id = {f.case_id: f for f in bundled_facts()}
    missing = [c for c in CASES if c not in by_id]
    if missing:
        raise WorkbenchError(f"the lesson's facts {missing} are not among the bundled facts")
    return [EXAMPLES[0], *(by_id[c] for c in CASES)]


def settings(model) -> dict[str, Any]:
    """The panels' default settings on ``model``, as stored in (and checked against) a lesson file."""
    from workbench.evaluation.generated import LETTER_SAMPLES, LETTER_SEED, LETTER_TOKENS, LETTER_TOP_K
    from workbench.ui.knockout import WINDOW
    from workbench.ui.memories import DEFAULT_KEYS
    from workbench.ui.trace import DEFAULT_SAMPLES

    trace = dataclasses.asdict(TraceSettings(kinds=("mlp",), samples=DEFAULT_SAMPLES))
    return {
        "trace": {k: (list(v) if isinstance(v, tuple) else v) for k, v in trace.items()},
        "memories": {"top_k": DEFAULT_KEYS, "at": "trace peak, last subject token"},
        "profile": {"key": "first by weight"},
        "knockout": {"window": min(WINDOW, model.n_layers), "attribute_rate": True},
        "letters": {"samples": LETTER_SAMPLES, "tokens": LETTER_TOKENS, "top_k": LETTER_TOP_K, "seed": LETTER_SEED},
    }


@dataclass
class Prepared:
    """One fact's results, as the panels compute them at their defaults (see the module doc)."""

    fact: Fact
    trace: TraceResult
    trace_key: str
    trace_answer: str | None
    memories: MemoryReport
    memory_keys: int
    enrichment: EnrichmentResult | str
    profile: KeyProfile
    knockout: KnockoutResult
    letters: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def layer(self) -> int:
        return self.memories.layer

    @property
    def position(self) -> int:
        return self.memories.position


@dataclass
class Lesson:
    """The lesson's facts, their prepared results (by :func:`fact_key`), and where they came from.

    ``note`` says why a file was not used ("" when one was); ``source`` is the file used.
    """

    facts: list[Fact]
    prepared: dict[tuple, Prepared]
    source: Path | None = None
    note: str = ""

    def get(self, fact: Fact | None) -> Prepared | None:
        return None if fact is None else self.prepared.get(fact_key(fact))


def _trace_settings(model, fact: Fact) -> TraceSettings:
    """The Trace panel's settings for ``fact`` at its defaults: traced towards the model's top-1
    when that begins the true object, else towards the true object (``TracePanel._answer``)."""
    from workbench.facts import top_begins_true_object
    from workbench.probing import probe
    from workbench.ui.trace import DEFAULT_SAMPLES

    top = probe(model, fact.text, top_k=1)[0].top[0].token
    answer = None if top_begins_true_object(model, fact, top) else fact.target_true
    return TraceSettings(kinds=("mlp",), samples=DEFAULT_SAMPLES, answer=answer)


def prepare_fact(model, fact: Fact, *, log: Callable[[str], None] = lambda _: None) -> dict:
    """Compute ``fact``'s lesson entry on ``model`` (unedited) as the panels would, at their defaults.

    Example:
        >>> entry = prepare_fact(model, lesson_facts()[0])       # doctest: +SKIP
        >>> sorted(entry)[:3]                                     # doctest: +SKIP
        ['enrichment', 'fact', 'knockout']
    """
    from workbench.locate import enrichment, key_profile, knockout, memories, trace
    from workbench.ui.edit import trace_peak
    from workbench.ui.knowledge import generate_letters, sample_prompts
    from workbench.evaluation.relations import letter_prompts

    if not model.is_unedited():
        raise WorkbenchError("a lesson is prepared on the unedited model: revert the edits first")
    conf = settings(model)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    chosen = _trace_settings(model, fact)
    traced = trace(model, fact, settings=chosen)
    seconds["trace"] = time.perf_counter() - start
    layer, _ = trace_peak(traced)
    position = traced.subject_range[1] - 1
    start = time.perf_counter()
    report = memories(model, fact.text, layer=layer, position=position, top_k=conf["memories"]["top_k"],
                      answer=fact.target_true)
    try:
        enriched: Any = enrichment(model, fact).to_dict()
    except WorkbenchError as exc:  # the Memories panel shows this sentence in its place
        enriched = str(exc)
    seconds["memories"] = time.perf_counter() - start
    start = time.perf_counter()
    key = report.ranked("weight")[0].key
    profile = key_profile(model, layer, key, prompt=fact.text)
    seconds["profile"] = time.perf_counter() - start
    start = time.perf_counter()
    # Its attribute rate is the same enrichment() call as the Memories panel's, stored once.
    knocked = knockout(model, fact, window=conf["knockout"]["window"], answer=None)
    seconds["knockout"] = time.perf_counter() - start
    letters: list[list] = []
    if fact.target_new:
        start = time.perf_counter()
        prompts = sample_prompts(letter_prompts(fact))
        letters.append([prompts, generate_letters(model, prompts)])
        seconds["letters"] = time.perf_counter() - start
    log(f"{fact.subject!r}: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return {
        "fact": fact.to_dict(), "trace_key": chosen.key(model, fact), "trace_answer": chosen.answer,
        "trace": _stored_trace(traced),
        "memories": report.to_dict(), "enrichment": enriched, "profile": profile.to_dict(),
        "knockout": knocked.to_dict(), "letters": letters, "seconds": seconds,
    }


def _stored_trace(result: TraceResult) -> dict:
    d = result.to_dict()
    d.pop("indirect_effects", None)  # derived: scores minus the corrupted probability
    return d


def write_lesson(model, path: Path, facts: Sequence[Fact] | None = None, *,
                 log: Callable[[str], None] = lambda _: None, command: str = "") -> Path:
    """Prepare every lesson fact on ``model`` and write the lesson file at ``path`` (atomically).

    Example:
        >>> write_lesson(model, SHIPPED / f"{model.name}.json")   # doctest: +SKIP
    """
    from workbench.runtime.cache import write_file_atomically

    facts = list(facts) if facts is not None else lesson_facts()
    # Resumable: a current file's entries are kept (a key profile's first corpus pass at a layer
    # takes a minute or more), and the file is rewritten after every fact.
    done: dict[tuple, dict] = {}
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            if _stale(old, model) is None:
                done = {fact_key(Fact(**e["fact"])): e for e in old["facts"]}
        except (OSError, ValueError, KeyError, TypeError, WorkbenchError):
            done = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    for fact in facts:
        entries.append(done.get(fact_key(fact)) or prepare_fact(model, fact, log=log))
        data = {"format": FORMAT, "version": VERSION, "model": model.name, "fingerprint": model.fingerprint,
                "settings": settings(model), "command": command, "facts": entries}
        write_file_atomically(path, (json.dumps(data) + "\n").encode())
    return path


# -- reading it back -----------------------------------------------------------------------------
def _scores(items) -> list[TokenScore]:
    return [TokenScore(**t) for t in items]


def _report(d: dict) -> MemoryReport:
    d = dict(d)
    d["sub_updates"] = [SubUpdate(**{**u, "promotes": _scores(u["promotes"]), "demotes": _scores(u["demotes"])})
                        for u in d["sub_updates"]]
    for name in ("ffn_promotes", "ffn_demotes", "lens_before", "lens_after"):
        d[name] = _scores(d[name])
    return MemoryReport(**d)


def _profile(d: dict) -> KeyProfile:
    d = dict(d)
    d["promotes"], d["demotes"] = _scores(d["promotes"]), _scores(d["demotes"])
    d["contexts"] = [KeyContext(**c) for c in d["contexts"]]
    d["negative_contexts"] = [KeyContext(**c) for c in d["negative_contexts"]]
    return KeyProfile(**d)


def _entry(d: dict, memory_keys: int) -> Prepared:
    """One stored fact, rebuilt; raises KeyError/TypeError/ValueError on a malformed entry."""
    enriched = d["enrichment"]
    return Prepared(
        fact=Fact(**d["fact"]), trace=TraceResult.from_dict(d["trace"]), trace_key=str(d["trace_key"]),
        trace_answer=d["trace_answer"], memories=_report(d["memories"]), memory_keys=memory_keys,
        enrichment=enriched if isinstance(enriched, str) else EnrichmentResult(**enriched),
        profile=_profile(d["profile"]), knockout=KnockoutResult(**d["knockout"]),
        letters={tuple(prompts): list(texts) for prompts, texts in d.get("letters", [])},
        seconds={k: float(v) for k, v in d.get("seconds", {}).items()},
    )


def cache_path(model) -> Path:
    """Where set-up keeps a lesson computed on this machine (when the committed one does not fit)."""
    from workbench.runtime.cache import cache_dir

    return cache_dir("lesson") / f"{model.name}.json"


def _stale(data: Any, model) -> str | None:
    """Why ``data`` is not a lesson for ``model`` with this code's settings (None: it is)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return "it is not a lesson file"
    if data.get("version") != VERSION:
        return f"it is of version {data.get('version')!r}, this code reads version {VERSION}"
    if data.get("model") != model.name or data.get("fingerprint") != model.fingerprint:
        return (f"it was prepared for {data.get('model')!r} (weights {data.get('fingerprint')}), not the loaded "
                f"{model.name!r} ({model.fingerprint})")
    if data.get("settings") != settings(model):
        return "the panels' default settings changed since it was prepared"
    return None


def read_lesson(model, paths: Sequence[Path] | None = None) -> Lesson:
    """The lesson for ``model``: the first of ``paths`` (default: the committed file, then the
    cache's) that is whole and current; with none, the lesson's facts with nothing prepared and a
    note that says why. Never raises for a bad file: a class goes on computing as usual."""
    paths = list(paths) if paths is not None else [SHIPPED / f"{model.name}.json", cache_path(model)]
    notes: list[str] = []
    for path in paths:
        if not path.exists():
            continue
        try:
            data = read_json(path, "prepared lesson")  # bounded in size and depth, as every file the app reads
        except WorkbenchError as exc:
            notes.append(f"the prepared lesson {path.name} is corrupt ({exc}) and was ignored")
            continue
        why = _stale(data, model)
        if why is not None:
            notes.append(f"the prepared lesson {path.name} was ignored: {why}")
            continue
        try:
            entries = [_entry(d, int(data["settings"]["memories"]["top_k"])) for d in data["facts"]]
        except (KeyError, TypeError, ValueError, AttributeError, WorkbenchError) as exc:
            notes.append(f"the prepared lesson {path.name} is corrupt ({type(exc).__name__}: {exc}) and was ignored")
            continue
        return Lesson(facts=[e.fact for e in entries], prepared={fact_key(e.fact): e for e in entries}, source=path,
                      note="; ".join(notes))
    if not notes:
        notes.append(f"no lesson is prepared for {model.name}")
    try:
        facts = lesson_facts()
    except WorkbenchError as exc:
        facts, notes = [], [*notes, str(exc)]
    return Lesson(facts=facts, prepared={}, note="; ".join(notes) + (
        ": every click computes as usual (prepare one at set-up: workbench app --lesson)"))


# -- prepared edits (kept in the cache, not committed: each is a few megabytes) --------------------
def _slug(fact: Fact) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", f"{fact.subject}-{fact.target_new}").strip("-").lower()[:60]


def edit_file(model, fact: Fact) -> Path:
    """Where set-up saves ``fact``'s edit at the Edit panel's defaults (in the cache)."""
    from workbench.runtime.cache import cache_dir

    return cache_dir("lesson", model.fingerprint) / f"{_slug(fact)}.safetensors"


def tensor_hashes(handle) -> dict[str, str]:
    """The hashes of the weights an edit wrote: what the saved letters were sampled on."""
    from workbench.editing.handle import tensor_hash

    return {k: tensor_hash(v) for k, v in handle.after.items()}


def letters_file(edit: Path) -> Path:
    """The letters sampled on a saved edit's weights, beside it."""
    return edit.with_name(edit.name.removesuffix(".safetensors") + ".letters.json")


def prepared_letters(model, fact: Fact | None, prompts: tuple[str, ...]) -> list[str] | None:
    """The letters set-up sampled for ``prompts`` on the edit applied now, when that edit is the
    only one and its weights are, hash for hash, the saved edit's of ``fact``; else None."""
    from workbench.editing import active_edits

    edits = active_edits(model)
    if fact is None or len(edits) != 1 or getattr(model, "prompt_edits", None):
        return None
    path = letters_file(edit_file(model, fact))
    if not path.exists():
        return None
    try:
        data = read_json(path, "prepared letters")
        if tensor_hashes(edits[0]) != data["after"]:
            return None
        return next((list(texts) for p, texts in data["letters"] if tuple(p) == tuple(prompts)), None)
    except (OSError, ValueError, KeyError, TypeError, WorkbenchError):
        return None


def default_edit(model) -> tuple[str, list[int] | None]:
    """The Edit panel's default method and its default layers on ``model``."""
    from workbench.ui.edit import default_layers_for, methods

    method = methods()[0]
    return method, default_layers_for(model, method)


def save_edits(model, facts: Sequence[Fact], *, log: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Make each fact's edit as the Edit panel's Apply makes it at its defaults, sample the letters'
    "now" column on it, save both, revert it."""
    from workbench.editing import edit, method_spec
    from workbench.evaluation.relations import letter_prompts
    from workbench.runtime.cache import write_file_atomically
    from workbench.ui.knowledge import generate_letters, sample_prompts

    method, layers = default_edit(model)
    spec = method_spec(method)
    saved = []
    for fact in facts:
        if not fact.target_new:
            continue
        kwargs = {"check_known": False} if spec.checks_known else {}
        start = time.perf_counter()
        handle = edit(model, fact, method=method, layers=layers, **kwargs)
        try:
            # The letters' "now" column on these weights too: Apply loads them bit for bit.
            prompts = sample_prompts(letter_prompts(fact))
            letters = {"after": tensor_hashes(handle),
                       "letters": [[prompts, generate_letters(model, prompts)]]}
            path = handle.save(edit_file(model, fact), overwrite=True)
            write_file_atomically(letters_file(path), json.dumps(letters).encode())
            saved.append(path)
        finally:
            handle.revert()
        log(f"{fact.subject!r}: {method} edit saved ({time.perf_counter() - start:.1f} s)")
    return saved


def prepared_edit(model, fact: Fact | None, method: str, layers: list[int] | None, hparams: dict) -> Path | None:
    """The saved edit that Apply may load instead of computing: only for a lesson fact, on the
    unedited model, with the panel's default method, layers and no hyper-parameters."""
    if fact is None or hparams or not model.is_unedited():
        return None
    default_method, default_layers = default_edit(model)
    if method != default_method or (layers is not None and list(layers) != list(default_layers or [])):
        return None
    path = edit_file(model, fact)
    return path if path.exists() else None


# -- the command ---------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m workbench.ui.lesson --write`` (the committed file) or ``--cache`` (set-up)."""
    ap = argparse.ArgumentParser(description="Prepare the lesson's facts ahead (lesson mode of the app).")
    ap.add_argument("--model", default=None, help="model name (default: the default model)")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--write", action="store_true", help=f"write the committed file {SHIPPED}/<model>.json")
    where.add_argument("--cache", action="store_true",
                       help="set-up: prepare into the cache unless a current lesson is there, and save the edits")
    ap.add_argument("--no-edits", action="store_true", help="with --cache: do not save the edits")
    args = ap.parse_args(argv)
    from workbench.core.model import load_model

    model = load_model(args.model) if args.model else load_model()
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    command = "python -m workbench.ui.lesson " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.write:
        path = write_lesson(model, SHIPPED / f"{model.name}.json", log=log, command=command)
        print(f"lesson of {len(lesson_facts())} facts in {path}")
        return 0
    lesson = read_lesson(model)
    if not lesson.prepared:
        log(f"lesson: {lesson.note}; preparing it in the cache…")
        write_lesson(model, cache_path(model), log=log, command=command)
        lesson = read_lesson(model)
    if not args.no_edits:
        missing = [f for f in lesson.facts if f.target_new and not edit_file(model, f).exists()]
        save_edits(model, missing, log=log)
    print(f"lesson ready: {len(lesson.prepared)} facts prepared ({lesson.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
