""""Did its knowledge change?": the fact's letter prompts and the user's free prompts,
generated before the edits and now, side by side (issue 39, issue 41 finding 7).

The letter prompts name the subject but not the relation ("Dear Anna, greetings from
my trip to the Eiffel Tower! Today I"): a model whose knowledge changed writes the new
object into the letter, one that only learned to finish the edit prompt does not.
The texts are sampled with the evaluation's letter settings
(:func:`workbench.evaluation.generated.letter_test`: the same prompts, samples, tokens,
top-k and seed in one call), so the letters shown are the ones the ``letter`` measure
counts. Each text is judged by :func:`~workbench.evaluation.judge.letter_verdict`
(does it name the new object, the old one, both, neither), the objects are marked in
the text, and the counts sum it up.

"Now" goes through the model as edited -- weights changed, hooks (GRACE, WISE) on,
and prompts rewritten by the in-context and retrieval memories (``generate_many``
reads ``model.contextualize``); "before" is the same call inside
:func:`~workbench.editing.unedited`, nothing reverted. The letters' "before" is made
in the background after a fact is chosen, and their "now" after an edit (both after the
Probes panel's greedy answers), so that a click finds them made; when it comes first, only
"now" is generated, and it is drawn as it grows.
"""

from __future__ import annotations

import html
import re
import time
import unicodedata
from collections.abc import Callable, Sequence

import ipywidgets as widgets

from workbench.editing import active_edits, unedited
from workbench.evaluation import text_cache
from workbench.evaluation.generated import LETTER_SAMPLES, LETTER_SEED, LETTER_TOKENS, LETTER_TOP_K
from workbench.evaluation.judge import counted_mentions, letter_verdict, names
from workbench.evaluation.relations import letter_prompts
from workbench.probing import generate_many
from workbench.runtime.progress import Cancelled
from workbench.snippets import Call, Code, literal
from workbench.ui.code import cell
from workbench.ui.state import State, Task
from workbench.ui.widgets import CodeView, ErrorLine

#: How the objects are marked in the texts (the same colours in the legend).
NEW_MARK = "background:#ffd88a"
OLD_MARK = "background:#b9d8ff"
#: A mention the verdict does not count: no colour, a dotted underline (see :func:`highlight`).
UNCOUNTED_MARK = "background:none;text-decoration:underline dotted #888"
UNCOUNTED_TIP = ("not counted by the verdict: another thing's name, the subject's own name, "
                 "a denial, or a sentence about something else")
#: The verdicts as the view names them (the judge calls the old object "true").
SHOWN = {"new": "new", "true": "old", "both": "both", "neither": "neither", "": ""}
VERDICT_STYLE = {"new": "color:#8a4b00;font-weight:bold", "true": "color:#1a4f9c;font-weight:bold",
                 "both": "color:#6a1b9a;font-weight:bold", "neither": "color:#666"}
#: Seconds between redraws while the "now" texts grow.
STREAM_EVERY = 0.25


def sample_prompts(prompts: Sequence[str], samples: int = LETTER_SAMPLES) -> list[str]:
    """Each prompt ``samples`` times in a row, as :func:`~workbench.evaluation.generated.letter_test` asks them."""
    return [p for p in prompts for _ in range(samples)]


def generate_letters(model, prompts: Sequence[str], *, cancel=None, on_text=None) -> list[str]:
    """Sampled continuations with the letter test's settings (one call: the same texts as the measure).
    The unedited model's are kept on disk (:mod:`~workbench.evaluation.text_cache`): a fact
    picked again, in this session or a later one, has its "before" at once."""
    settings = dict(max_new_tokens=LETTER_TOKENS, do_sample=True, top_k=LETTER_TOP_K, seed=LETTER_SEED)
    prompts = list(prompts)
    texts = text_cache.lookup(model, prompts, **settings)
    if texts is not None:
        if on_text is not None:
            on_text(list(texts))
        return texts
    texts = generate_many(model, prompts, cancel=cancel, on_text=on_text, **settings)
    text_cache.store(model, prompts, texts, **settings)
    return texts


def letter_calls(kinds: Sequence[str], groups: Sequence[Sequence[str]], *, edited: bool = False) -> list:
    """What "Generate letters" runs, as code: each group's prompts (each repeated as sampled)
    continued with the letter test's settings, in one call per group; ``edited``: also on the
    unedited model, the "before" column."""
    calls: list = []
    for kind, group in zip(kinds, groups):
        unique = list(dict.fromkeys(group))
        times = len(group) // max(1, len(unique))
        name = f"{kind}_prompts"
        calls.append(Code(f"{name} = [p for p in {literal(unique)} for _ in range({times})]"
                          if group == sample_prompts(unique, times) else f"{name} = {literal(list(group))}"))
        asked = {"max_new_tokens": LETTER_TOKENS, "do_sample": True, "top_k": LETTER_TOP_K, "seed": LETTER_SEED}
        calls.append(Call(generate_many, (Code(name),), asked, result=f"{kind}_texts", public=False))
        if edited:
            calls.append(Call(generate_many, (Code(name),), asked, result=f"{kind}_texts_before", public=False,
                              within=Code("wb.unedited(model)")))
    return calls


def _fold(text: str) -> tuple[str, list[int]]:
    """``text`` folded as the judge's :func:`~workbench.evaluation.judge.normalise` does, one
    character at a time (accents dropped, case folded, punctuation made a space), with each
    folded character's index in ``text``: a match in the folded text maps back to the original."""
    out, where = [], []
    for i, c in enumerate(text):
        plain = "".join(x for x in unicodedata.normalize("NFKD", c) if not unicodedata.combining(x)).casefold()
        for x in plain or " ":
            out.append(x if re.match(r"\w", x) else " ")
            where.append(i)
    return "".join(out), where


def mention_spans(text: str, obj: str) -> list[tuple[int, int]]:
    """Where ``text`` names ``obj`` (its names and aliases, whole words, as the judge reads
    them): ``(start, end)`` character spans of ``text``.

    Example:
        >>> mention_spans("Greetings from Rome, not Romeo; ROME!", "Rome")
        [(15, 19), (32, 36)]
    """
    folded, where = _fold(text)
    spans = []
    for name in names(obj) if obj else ():
        words = name.split()
        if not words:
            continue
        pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)"
        for m in re.finditer(pattern, folded):
            spans.append((where[m.start()], where[m.end() - 1] + 1))
    return sorted(set(spans))


def highlight(text: str, *, new: str | None, old: str | None, subject: str | None = None) -> str:
    """``text`` as escaped HTML with the new object's mentions in one colour and the old
    one's in another (``<mark class="wb-mark-new">`` / ``wb-mark-old``); where two names
    overlap ("York" in "New York") the longer wins.

    With ``subject``, a mention the letter verdict does not count (another thing's name such as
    "Toyota Prius", the subject's own name, a denial, a sentence about something else:
    :func:`~workbench.evaluation.judge.counted_mentions`) is only underlined, class
    ``wb-mark-uncounted``, with a tooltip: the colours then agree with the verdict beside them.

    Example:
        >>> highlight("From Rome & Paris", new="Rome", old="Paris")
        'From <mark class="wb-mark-new" style="background:#ffd88a">Rome</mark> &amp; <mark class="wb-mark-old" style="background:#b9d8ff">Paris</mark>'
        >>> "wb-mark-uncounted" in highlight("a Toyota Prius", new="Toyota", old="Nissan", subject="Nissan Leaf")
        True
    """
    marks = [(s, e, "new") for s, e in (mention_spans(text, new) if new else [])]
    marks += [(s, e, "old") for s, e in (mention_spans(text, old) if old else [])]
    counted: set[tuple[int, int]] | None = None
    if subject:
        counted = {*(counted_mentions(text, new, subject=subject) if new else []),
                   *(counted_mentions(text, old, subject=subject) if old else [])}
    marks.sort(key=lambda m: (m[0], -(m[1] - m[0])))
    out, at = [], 0
    for start, end, kind in marks:
        if start < at:
            continue  # inside a longer mark already drawn
        out.append(html.escape(text[at:start]))
        word = html.escape(text[start:end])
        # Overlap, not equality: the judge folds text a little differently at the edges.
        if counted is not None and not any(s < end and start < e for s, e in counted):
            out.append(f'<mark class="wb-mark-{kind} wb-mark-uncounted" style="{UNCOUNTED_MARK}" '
                       f'title="{UNCOUNTED_TIP}">{word}</mark>')
        else:
            style = NEW_MARK if kind == "new" else OLD_MARK
            out.append(f'<mark class="wb-mark-{kind}" style="{style}">{word}</mark>')
        at = end
    out.append(html.escape(text[at:]))
    return "".join(out)


def verdict(text: str | None, fact) -> str:
    """The letter verdict of ``text`` ("" when there is no text or no new object to judge by)."""
    if text is None or not fact.target_new or not fact.target_true:
        return ""
    return letter_verdict(text, new=fact.target_new, true=fact.target_true, subject=fact.subject)


def counts(verdicts: Sequence[str], fact) -> str:
    """"3 of 6 name Rome, 0 name Paris (1 both)": a mention counts for each object it names."""
    n = len(verdicts)
    new = sum(v in ("new", "both") for v in verdicts)
    old = sum(v in ("true", "both") for v in verdicts)
    both = sum(v == "both" for v in verdicts)
    text = f"{new} of {n} name {fact.target_new}, {old} name {fact.target_true}"
    return text + (f" ({both} both)" if both else "")


class KnowledgeView(widgets.VBox):
    """The view: a Generate button (with Cancel), the counts, and one row per text.

    Args:
        state: the app's shared state.
        free: returns the free prompts typed in the Probes panel (prompts only).
        background: run in a thread (False: tests).
    """

    def __init__(self, state: State, *, free: Callable[[], list[str]], error: ErrorLine | None = None,
                 background: bool = True) -> None:
        self.state = state
        self.free = free
        self.error = error or ErrorLine()
        self.task = Task("Generate letters", css="wb-knowledge-run", error=self.error, background=background,
                         state=state)
        self.task.button.on_click(lambda _: self.run())
        self.summary = widgets.HTML()
        self.summary.add_class("wb-knowledge-counts")
        self.texts = widgets.HTML()
        self.texts.add_class("wb-knowledge-texts")
        self.code = CodeView("wb-knowledge-code")
        #: (prompts as generated, in order) -> texts on the unedited weights
        self.before: dict[tuple[str, ...], list[str]] = {}
        self.rows: list[dict] = []  # the last drawing: prompt, kind, before, now, verdicts
        self.timings: dict[str, float] = {}  # seconds from the click: first text, letters, all
        #: (weights version, prompts) -> texts on the weights applied then, sampled in the background
        #: after an edit (:meth:`prepare_now`); ``_version`` counts the changes of weights.
        self.ahead: dict[tuple[int, tuple[str, ...]], list[str]] = {}
        self._version = 0
        #: ``prompts -> texts or None``: the "now" column sampled at set-up for the edit applied now (the
        #: lesson strip sets it; workbench/ui/lesson.py).
        self.prepared: Callable[[tuple[str, ...]], list[str] | None] | None = None
        legend = (f"<mark style='{NEW_MARK}'>new object</mark> <mark style='{OLD_MARK}'>old object</mark> "
                  f"<mark style='{UNCOUNTED_MARK}' title='{UNCOUNTED_TIP}'>named, not counted</mark>")
        super().__init__([
            widgets.HTML("<b>Did its knowledge change?</b> Letters that name the subject but not the relation, and "
                         "your free prompts, continued before the edits and now (sampled as the letter test "
                         f"samples: {LETTER_SAMPLES} texts per prompt, {LETTER_TOKENS} tokens, top-{LETTER_TOP_K}, "
                         f"seed {LETTER_SEED}). A model whose knowledge changed writes the new object into the "
                         "letter. The verdicts are a pattern matcher's: checked against letters read by hand, "
                         "it finds nearly every claim, but after a weight edit about four in ten of its "
                         "'new' verdicts are a mention that claims nothing (docs/results.md) &mdash; read the "
                         f"texts. {legend}"),
            self.task, self.code, self.error, self.summary, self.texts,
        ])
        self.add_class("wb-knowledge-view")
        state.on("fact", self._fact_changed)
        state.on("weights", self._weights_changed)

    # -- what to generate ----------------------------------------------------------------
    def prompts(self, fact) -> tuple[list[str], list[str]]:
        """(letter prompts, free prompts), each repeated :data:`LETTER_SAMPLES` times."""
        letters = sample_prompts(letter_prompts(fact)) if fact.target_new else []
        typed = list(dict.fromkeys(p for p in self.free() if p.strip()))
        return letters, sample_prompts(typed)

    def prepare_before(self, model, token=None) -> None:
        """The letters on the unedited weights, made now if not yet (the model must be unedited
        and held): the Probes panel's background answers call it after a fact is chosen."""
        fact = self.state.fact
        if fact is None or not fact.target_new or active_edits(model) or getattr(model, "prompt_edits", None):
            return
        letters = sample_prompts(letter_prompts(fact))
        if letters and tuple(letters) not in self.before:
            self.before[tuple(letters)] = generate_letters(model, letters, cancel=token)

    def prepare_now(self, model, token=None) -> None:
        """The letters on the weights applied now, made ahead of the click (the model must be edited
        and held): the Probes panel's background answers call it after an edit, so that "Generate
        letters" draws them at once. Texts made while the weights changed are dropped."""
        fact = self.state.fact
        if fact is None or not fact.target_new or not (active_edits(model) or getattr(model, "prompt_edits", None)):
            return
        letters = tuple(sample_prompts(letter_prompts(fact)))
        version = self._version
        if letters and (version, letters) not in self.ahead:
            texts = generate_letters(model, list(letters), cancel=token)
            if version == self._version:
                self.ahead[(version, letters)] = texts

    def _prepared(self, prompts: tuple[str, ...]) -> list[str] | None:
        """Texts set-up sampled for ``prompts`` on the weights applied now, if any (lesson mode)."""
        if self.prepared is None:
            return None
        try:
            return self.prepared(prompts)
        except Exception:  # noqa: BLE001 - a head start only: generate as usual
            return None

    # -- events -----------------------------------------------------------------------------
    def _fact_changed(self) -> None:
        self.rows = []
        self.summary.value = ""
        self.texts.value = ""

    def _weights_changed(self) -> None:
        self._version += 1
        self.ahead.clear()
        if self.rows:
            self.rows = [{**r, "now": None} for r in self.rows]
            self._draw(self.state.fact, n_edits=None)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> None:
        fact = self.state.fact
        if fact is None:
            self.error.show("Choose a fact in the Fact tab first.")
            return
        if not fact.target_new:
            self.error.show("The fact has no new object: type one in the Fact tab.")
            return
        letters, typed = self.prompts(fact)
        model = self.state.model
        kinds = [k for k, g in (("letter", letters), ("free", typed)) if g]
        groups = [g for g in (letters, typed) if g]
        start = time.perf_counter()
        self.timings = {}

        version = self._version

        def work(token):
            n_edits = len(active_edits(model)) + len(getattr(model, "prompt_edits", []) or [])
            now: list[list[str] | None] = [None] * len(groups)
            growing: list[list[str]] = [[""] * len(g) for g in groups]
            shown = [0.0]

            def show(pending_before: bool, streaming: bool) -> None:
                self._show(fact, kinds, groups, now, growing, n_edits, pending_before=pending_before,
                           streaming=streaming)

            for i, group in enumerate(groups):
                if not n_edits and tuple(group) in self.before:
                    now[i] = self.before[tuple(group)]  # the unedited model: "now" is "before"
                    continue
                ready = (self.ahead.get((version, tuple(group))) or self._prepared(tuple(group))
                         if n_edits else None)
                if ready is not None:
                    # sampled in the background after the edit, or at set-up (workbench/ui/lesson.py),
                    # on these very weights
                    now[i] = ready
                    if i == 0:
                        self.timings["first text"] = self.timings["letters now"] = time.perf_counter() - start
                    continue

                def on_text(texts: list[str], i=i) -> None:
                    growing[i] = list(texts)
                    t = time.perf_counter()
                    if "first text" not in self.timings and any(x.strip() for x in texts):
                        self.timings["first text"] = t - start
                        shown[0] = 0.0  # the first words are drawn at once
                    if t - shown[0] >= STREAM_EVERY:
                        shown[0] = t
                        show(True, True)

                texts = generate_letters(model, group, cancel=token, on_text=on_text)
                now[i] = texts
                if i == 0:
                    self.timings["letters now"] = time.perf_counter() - start
                if not n_edits:
                    self.before[tuple(group)] = texts
                elif version == self._version:
                    # Kept as if made ahead: the background answers this click preempted start again
                    # after it, and their prepare_now then finds the letters made.
                    self.ahead[(version, tuple(group))] = texts
            missing = [g for g in groups if tuple(g) not in self.before]
            if missing:
                show(True, False)  # "now" complete; the "before" column follows
                try:
                    with unedited(model):
                        for group in missing:
                            self.before[tuple(group)] = generate_letters(model, group, cancel=token)
                except Cancelled:
                    show(False, False)  # no "generating…" left behind a Cancel
                    raise
            self.timings["all"] = time.perf_counter() - start
            return now, n_edits

        edited = bool(active_edits(model) or getattr(model, "prompt_edits", None))
        code = cell(self.state, letter_calls(kinds, groups, edited=edited), fact=fact)

        def done(result) -> None:
            now, n_edits = result
            self._show(fact, kinds, groups, now, [[""] * len(g) for g in groups], n_edits)
            self.code.set(code)

        def cancelled_or_failed() -> None:
            if self.task.status.value == "cancelled" and self.rows:
                self._draw(fact, n_edits=None, cancelled=True)

        self.task.run(work, done, busy="generating letters…", after=cancelled_or_failed)

    # -- drawing ------------------------------------------------------------------------------
    def _show(self, fact, kinds, groups, now, growing, n_edits, *, pending_before: bool = False,
              streaming: bool = False) -> None:
        rows = []
        for i, group in enumerate(groups):
            before = self.before.get(tuple(group))
            kind = kinds[i]
            for j, prompt in enumerate(group):
                if now[i] is not None:
                    text, final = now[i][j], True
                else:
                    text, final = (growing[i][j] if j < len(growing[i]) else ""), False
                rows.append({"kind": kind, "prompt": prompt, "sample": j, "now": text, "now final": final,
                             "before": before[j] if before is not None else None,
                             "pending before": pending_before and before is None})
        self.rows = rows
        self._draw(fact, n_edits=n_edits, streaming=streaming)

    def _draw(self, fact, *, n_edits, streaming: bool = False, cancelled: bool = False) -> None:
        if fact is None:
            return
        for r in self.rows:
            r["verdict now"] = verdict(r["now"], fact) if r.get("now final") and r["now"] is not None else ""
            r["verdict before"] = verdict(r["before"], fact)
        self.summary.value = self._summary(fact, n_edits, streaming=streaming, cancelled=cancelled)
        head = "".join(f"<th style='text-align:left;padding:2px 8px'>{h}</th>"
                       for h in ("prompt", "before the edits", "", "now", ""))
        body, last_prompt = [], None
        for r in self.rows:
            prompt = "" if r["prompt"] == last_prompt else html.escape(r["prompt"])
            last_prompt = r["prompt"]
            if r["before"] is not None:
                before = highlight(r["before"], new=fact.target_new, old=fact.target_true, subject=fact.subject)
            elif r.get("pending before") and not cancelled:
                before = "<i style='color:#777'>generating on the unedited weights…</i>"
            else:
                before = ""
            if r["now"] is None:
                now = "<i style='color:#777'>(press Generate letters)</i>"
            else:
                now = highlight(r["now"], new=fact.target_new, old=fact.target_true, subject=fact.subject)
                if not r.get("now final"):
                    now += " …" if not cancelled else " <i style='color:#777'>(cancelled)</i>"
            cells = [
                f"<td class='wb-knowledge-prompt' style='padding:2px 8px;color:#444'>{prompt}"
                + (" <span style='color:#999'>(free)</span>" if prompt and r["kind"] == "free" else "") + "</td>",
                f"<td class='wb-knowledge-before' style='padding:2px 8px'>{before}</td>",
                self._verdict_cell(r["verdict before"], "before"),
                f"<td class='wb-knowledge-now' style='padding:2px 8px'>{now}</td>",
                self._verdict_cell(r["verdict now"], "now"),
            ]
            body.append(f"<tr class='wb-knowledge-row wb-knowledge-{r['kind']}' style='vertical-align:top'>"
                        + "".join(cells) + "</tr>")
        self.texts.value = ("<table class='wb-knowledge-table' style='border-collapse:collapse;font-size:12px;"
                            f"max-width:100%'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")

    @staticmethod
    def _verdict_cell(v: str, when: str) -> str:
        style = VERDICT_STYLE.get(v, "")
        return (f"<td class='wb-knowledge-verdict-{when}' style='padding:2px 8px;{style}'>"
                f"{html.escape(SHOWN.get(v, v))}</td>")

    def _summary(self, fact, n_edits, *, streaming: bool, cancelled: bool) -> str:
        parts = []
        for kind, label in (("letter", "letters"), ("free", "free-prompt texts")):
            rows = [r for r in self.rows if r["kind"] == kind]
            if not rows:
                continue
            now = [r["verdict now"] for r in rows if r["verdict now"]]
            before = [r["verdict before"] for r in rows if r["verdict before"]]
            said = []
            if len(now) == len(rows):
                said.append(f"now: {html.escape(counts(now, fact))}")
            elif streaming:
                said.append("now: <i>generating…</i>")
            if len(before) == len(rows):
                said.append(f"before: {html.escape(counts(before, fact))}")
            if said:
                parts.append(f"<b>{label.capitalize()}</b> — " + "; ".join(said))
        if self.rows and all(r["now"] is None for r in self.rows):
            parts.append("<i style='color:#555'>The model changed since: press Generate letters for what it "
                         "writes now.</i>")
        if n_edits == 0:
            parts.append("<span style='color:#555'>No edit is applied: “now” is the unedited model.</span>")
        if cancelled:
            parts.append("<span style='color:#555'>Cancelled: the texts stop where they were.</span>")
        return "<div class='wb-knowledge-summary'>" + "<br>".join(parts) + "</div>"
