"""Probes panel: the fact's paraphrases, neighbours, implications and free prompts,
before and after the edits, refreshed right after every edit or revert.

"Before" is the unedited model (measured with the edits set aside, nothing
reverted, for rows added later too); "now" after every change to the model. Row colours say whether the
row behaves as the edit intends: edit and paraphrase prompts (and the fact asked as
a question) should now prefer the new object, neighbours should keep the true one
-- also right after the edit statement is read ("neighbour+", CounterFact+),
implications should now start their own target. A free prompt is scored on the
answer typed after it (``prompt → answer``) or, with none, shows its top-1 only.

Beside the teacher-forced probabilities sit the model's own greedy answers, before
and now, and which object each answer names (the judge of
:mod:`workbench.evaluation.judge`): an edit can win on p(new) > p(true) and still
not be what the model says.

Below them sits "Did its knowledge change?" (:mod:`workbench.ui.knowledge`): the fact's
letters and the free prompts, sampled before the edits and now, the objects marked.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence

import ipywidgets as widgets

from workbench.editing import active_edits, unedited
from workbench.errors import WorkbenchError
from workbench.evaluation.generated import ANSWER_TOKENS, plus_prompts
from workbench.evaluation.judge import first_sentence, judge
from workbench.evaluation.relations import question_prompt
from workbench.probing import generate_many, probe
from workbench.runtime.progress import Cancelled
from workbench.ui.knowledge import KnowledgeView
from workbench.snippets import Call, Code, assign
from workbench.ui.code import cell
from workbench.ui.state import State, Task
from workbench.ui.widgets import ClampedIntText, CodeView, ErrorLine, guarded, split_arrow, table, visible

GOOD, BAD = "background:#e3f4e1", "background:#fbe3e3"
#: Prompts generated per step of the answers task (preempted, it stops within one token).
ANSWER_STEP = 4
#: Seconds between redraws of the generations while they grow (each redraw sends the table).
STREAM_EVERY = 0.25


def parse_free(text: str) -> list[tuple[str, str | None]]:
    """Free prompt lines → ``(prompt, expected answer or None)``; ``prompt → answer`` gives one.

    Example:
        >>> parse_free("Paris is in\\nThe Louvre is in the city of → Paris")
        [('Paris is in', None), ('The Louvre is in the city of', 'Paris')]
    """
    out = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        prompt, expected = split_arrow(line)
        if not prompt:
            raise WorkbenchError(f"a free prompt line has an answer but no prompt ({expected!r})")
        out.append((prompt, expected or None))
    return out


def probe_rows(fact, free: list) -> list[dict]:
    """One row per prompt: kind, prompt, and the targets scored on it.

    ``free``: prompts or ``(prompt, expected)`` pairs. A free prompt is not about the
    fact, so it is scored on its own expected answer, or on none (its top-1 only).
    """
    pair = [t for t in (fact.target_true, fact.target_new) if t]
    rows = [{"kind": "edit", "prompt": fact.text, "targets": pair}]
    rows += [{"kind": "paraphrase", "prompt": p, "targets": pair} for p in fact.paraphrase_prompts]
    question = question_prompt(fact)
    if question is not None:
        rows.append({"kind": "question", "prompt": question, "targets": pair})
    rows += [{"kind": "neighbour", "prompt": p, "targets": pair} for p in fact.neighborhood_prompts]
    if fact.target_new:
        rows += [{"kind": "neighbour+", "prompt": p, "targets": pair} for p in plus_prompts(fact)]
    rows += [{"kind": "implication", "prompt": i.prompt, "targets": [i.target]} for i in fact.implication_prompts]
    for item in free:
        prompt, expected = (item, None) if isinstance(item, str) else item
        rows.append({"kind": "free", "prompt": prompt, "targets": [expected] if expected else []})
    return rows


def probe_calls(prompts: list[str], targets: list[list[str]], *, edited: bool) -> list:
    """The Probes table as code: every row's prompt and targets, probed now (and on the unedited
    model, the "before" columns, when edits are applied)."""
    asked = {"targets": Code("targets"), "top_k": 1}
    calls = [assign("prompts", prompts), assign("targets", targets),
             Call(probe, (Code("prompts"),), asked, result="now")]
    if edited:
        calls.append(Call(probe, (Code("prompts"),), asked, result="before", within=Code("wb.unedited(model)")))
    return calls


def _outcome(row: dict, after, fact) -> bool | None:
    """Does this prompt behave as the edit intends? None when it cannot say."""
    probs = {t.target: t.prob for t in after.targets}
    if row["kind"] == "free":
        if not row["targets"]:
            return None  # no expected answer: only the top-1 change is shown
        target = row["targets"][0].strip().lower()
        top = after.top[0].token.strip().lower() if after.top else ""
        return bool(top) and target.startswith(top)
    if row["kind"] == "implication":
        target = row["targets"][0].strip().lower()
        top = after.top[0].token.strip().lower() if after.top else ""
        return bool(top) and target.startswith(top)
    if fact.target_true is None or fact.target_new is None:
        return None
    new, true = probs.get(fact.target_new, 0.0), probs.get(fact.target_true, 0.0)
    return true > new if row["kind"] in ("neighbour", "neighbour+") else new > true


def said(row: dict, answer: str | None, fact) -> str:
    """Which object a greedy answer names: "new", "true", "neither" ("" when there is nothing to judge).

    An implication's answer is judged against its own target (as "new").
    """
    if answer is None or fact.target_true is None or row["kind"] == "free":
        return ""
    new = row["targets"][0] if row["kind"] == "implication" else fact.target_new
    if new is None:
        return ""
    if row["kind"] == "implication" and new.strip().lower() == fact.target_true.strip().lower():
        return ""
    return judge(answer, new=new, true=fact.target_true)


class ProbesPanel(widgets.VBox):
    def __init__(self, state: State, *, background: bool = True, answers: bool = True) -> None:
        self.state = state
        self.error = ErrorLine()
        self.free = widgets.Textarea(placeholder="free prompts, one per line; 'prompt → answer' to score an "
                                                 "expected answer (else only the top-1 is shown)", rows=3,
                                     layout=widgets.Layout(width="70%"), description="Free")
        self.free.add_class("wb-probe-free")
        self.refresh_button = widgets.Button(description="Probe now", button_style="primary")
        self.refresh_button.add_class("wb-probe-run")
        self.refresh_button.on_click(guarded(self.error, lambda _: self.refresh()))
        state.needs_model(self.refresh_button)
        self.table = widgets.HTML()
        self.table.add_class("wb-probe-table")
        self.timing = widgets.HTML()
        self.timing.add_class("wb-probe-timing")
        self.code = CodeView("wb-probe-code")
        self.gen_tokens = ClampedIntText(value=20, lo=1, hi=200, description="Tokens")
        self.gen_tokens.add_class("wb-generate-tokens")
        self.gen_task = Task("Generate", css="wb-generate-run", error=self.error, background=background, state=state)
        self.gen_task.button.on_click(lambda _: self.run_generations())
        self.generations = widgets.HTML()
        self.generations.add_class("wb-generations")
        self.before: dict[str, object] = {}  # prompt -> PromptProbe at fact choice
        self.rows: list[dict] = []
        self.last: list = []
        self.gen_before: dict[tuple[str, int], str] = {}  # (prompt, tokens) -> generation with no edit
        self.answers_on = widgets.Checkbox(value=answers, description="Greedy answers after each probe", indent=False,
                                           layout=widgets.Layout(width="auto"))
        self.answers_on.add_class("wb-answers-on")
        self.answer_task = Task("Answer", css="wb-answers-run", error=self.error, background=background, state=state,
                                preemptible=True)
        self.answer_task.button.on_click(lambda _: self.run_answers())
        self.answers_before: dict[str, str] = {}  # prompt -> greedy answer with no edit applied
        self.answers_now: dict[str, str] = {}
        self._answers_version = -1  # the probe (``_version``) answers_now belong to
        self._version = 0  # bumped by every probe: answers generated for an older one are dropped
        self._answers_wanted = False
        #: When it says True, greedy answers wait until :meth:`release_answers` (lesson mode holds
        #: them while another tab is open: they would hold the cores its prepared clicks need).
        self.hold_answers: Callable[[], bool] | None = None
        self._answers_held = False
        self._fact_key: tuple[str, str] | None = None
        # Generation lives here (issue 39): the fact's letters and the free prompts, before and now.
        # The greedy Generate above (`run_generations`, `gen_before`) is no longer drawn.
        self.knowledge = KnowledgeView(state, free=lambda: [p for p, _ in self._free_prompts()],
                                       background=background)
        state.on("fact", guarded(self.error, self._fact_changed))
        state.on("weights", guarded(self.error, self.refresh))
        self._probe_when_free = False
        state.on("busy", self._model_free)
        super().__init__([
            widgets.HTML("<b>Probes</b>: does the edit reach paraphrases, the question and implications, and "
                         "leave neighbours alone (also right after the edit statement: <i>neighbour+</i>)? "
                         "<i>p</i> columns are teacher-forced probabilities; <i>answer</i> columns are what the "
                         "model itself says (greedy, first sentence), and <i>says</i> which object it names. "
                         "Refreshed after every edit and revert."),
            self.free, widgets.HBox([self.refresh_button, self.answers_on]), self.code, self.answer_task, self.error,
            self.table, self.timing,
            self.knowledge,
        ])
        self.add_class("wb-probes-panel")

    def _fact_changed(self) -> None:
        self.gen_before = {}
        self.answers_before, self.answers_now = {}, {}
        self.generations.value = ""
        self._version += 1  # answers still being generated are for the last fact's rows: dropped
        fact = self.state.fact
        key = (fact.subject, fact.prompt) if fact is not None else None
        if key != self._fact_key:
            self.free.value = ""  # free prompts belong to the fact they were typed for
        self._fact_key = key
        self._probe_when_free = False
        try:
            self.refresh(baseline=True)  # resets "before" only once the new rows are probed
        except WorkbenchError:
            # The model is busy: no table of the last fact's rows under the new fact, and the
            # new rows are probed as soon as the task holding the model lets it go.
            self.rows, self.last, self.before = [], [], {}
            busy = html.escape(self.state.busy_with or "another task")
            self.table.value = (f"<i>The model was busy ({busy}) when the fact changed: the probes "
                                "follow when it is free (or press Probe now).</i>")
            self._probe_when_free = True

    def _model_free(self) -> None:
        """A task let the model go: probe the rows a busy model refused at the last fact change."""
        if self._probe_when_free and self.state.busy_task is None:
            self._probe_when_free = False
            # On the kernel's loop, after the ending task has released the lock.
            self.state.soon(guarded(self.error, self._probe_after_busy))

    def _probe_after_busy(self) -> None:
        try:
            self.refresh(baseline=True)
        except WorkbenchError:
            self._probe_when_free = True  # taken again meanwhile: wait for the next release

    def _free_prompts(self) -> list[tuple[str, str | None]]:
        return parse_free(self.free.value)

    def refresh(self, baseline: bool = False) -> None:
        """Probe every row now (one batched call) and redraw the table."""
        fact = self.state.fact
        if fact is None:
            self.table.value = "<i>Choose a fact in the Fact tab first.</i>"
            return
        model = self.state.model
        rows = probe_rows(fact, self._free_prompts())
        started = time.perf_counter()
        prompts, targets = [r["prompt"] for r in rows], [r["targets"] for r in rows]
        with self.state.using():
            result = probe(model, prompts, targets=targets, top_k=1)
            n_edits = len(active_edits(model))
            code = cell(self.state, probe_calls(prompts, targets, edited=bool(n_edits)), fact=fact)
            if baseline:
                self.before = {}
            if n_edits == 0:
                self.before.update({p.prompt: p for p in result.prompts if p.prompt not in self.before})
            missing = [i for i, p in enumerate(prompts) if p not in self.before]
            if missing:
                # "Before" is the unedited model, also for rows added after an edit.
                with unedited(model):
                    earlier = probe(model, [prompts[i] for i in missing], targets=[targets[i] for i in missing],
                                    top_k=1)
                self.before.update({p.prompt: p for p in earlier.prompts})
        seconds = time.perf_counter() - started
        self._probe_when_free = False
        self.rows, self.last = rows, list(result.prompts)
        self.answers_now = {}  # stale after a change to the model; refilled below
        self._version += 1
        self.timing.value = (f"<span style='color:#555'>{len(rows)} prompts probed in {seconds:.2f} s; "
                             f"{n_edits} edit{'s' if n_edits != 1 else ''} applied now; 'before' is the "
                             "unedited model</span>")
        self._draw(fact, n_edits)
        self.code.set(code)
        if self.answers_on.value:
            # After the rest of this click: the answers hold the model for seconds, and the
            # Fact panel's top tokens (probed right after a fact is chosen) must not find it busy.
            self.state.soon(guarded(self.error, self.run_answers))

    # -- greedy answers ----------------------------------------------------------------
    def run_answers(self) -> None:
        """Generate every row's greedy answer (one batched call) and add them to the table."""
        fact = self.state.fact
        if fact is None:
            self.error.show("Choose a fact in the Fact tab first.")
            return
        if not self.rows:
            if not self._probe_when_free:  # else the rows follow when the model is free, then their answers
                self.error.show("No probe rows yet: press Probe now first.")
            return
        if self.hold_answers is not None and self.hold_answers():
            self._answers_held = True
            return
        if self.answer_task.running:
            # One run at a time; the running one ends by starting another for the rows then current.
            self._answers_wanted = True
            return
        self._answers_wanted = False
        model, prompts = self.state.model, [r["prompt"] for r in self.rows]
        gen_prompts, gen_n = self._generation_prompts(fact), int(self.gen_tokens.value)

        def work(token):
            n_edits = len(active_edits(model))
            # On the unedited weights a prompt's greedy answer never changes: a run preempted by
            # a click keeps what it made, and the next run only generates the rest. On edited weights
            # the answers shown for this probe (the same rows and weights) are kept the same way.
            if not n_edits:
                said = {p: self.answers_before[p] for p in prompts if p in self.answers_before}
            elif self._answers_version == version:
                said = {p: self.answers_now[p] for p in prompts if p in self.answers_now}
            else:
                said = {}
            todo = [p for p in prompts if p not in said]
            # A few prompts per step, so that a quick call that preempts this waits a moment only.
            for start in range(0, len(todo), ANSWER_STEP):
                token.check()
                chunk = todo[start : start + ANSWER_STEP]
                said.update(zip(chunk, generate_many(model, chunk, max_new_tokens=ANSWER_TOKENS, cancel=token)))
                if not n_edits:
                    self.answers_before.update((p, said[p]) for p in chunk)
            texts = [said[p] for p in prompts]
            # Shown at once: what follows (the answers before the edits for new rows, the
            # generations' and letters' "before", or the letters "now") takes seconds more.
            self._show_answers((version, prompts, texts, n_edits))
            if n_edits:
                # The answers before the edits, for rows first seen with an edit applied.
                missing = [p for p in prompts if p not in self.answers_before]
                for start in range(0, len(missing), ANSWER_STEP):
                    token.check()
                    with unedited(model):
                        said_then = generate_many(model, missing[start : start + ANSWER_STEP],
                                                  max_new_tokens=ANSWER_TOKENS, cancel=token)
                    self.answers_before.update(zip(missing[start : start + ANSWER_STEP], said_then))
                # The letters "now", while the class reads the answers: "Did its knowledge change?"
                # then draws them at the click.
                token.check()
                self.knowledge.prepare_now(model, token)
            else:
                # The generations' "before", on the weights as picked, while the class reads the
                # table: Generate after an edit then runs only its "now".
                missing = [p for p in gen_prompts if (p, gen_n) not in self.gen_before]
                if missing:
                    before = generate_many(model, missing, max_new_tokens=gen_n, cancel=token)
                    self.gen_before.update({(p, gen_n): g for p, g in zip(missing, before)})
                # The letters' "before" too: after an edit, "Did its knowledge change?" runs only "now".
                token.check()
                self.knowledge.prepare_before(model, token)
            return texts, n_edits

        version = self._version
        self.answer_task.run(lambda token: (version, prompts, *work(token)), self._show_answers,
                             busy="generating answers…", after=self._answers_ended)

    def release_answers(self) -> None:
        """Start the answers a hold kept back (nothing if none were)."""
        if self._answers_held:
            self._answers_held = False
            if self.answers_on.value:  # switched off meanwhile: nothing to start
                self.state.soon(guarded(self.error, self.run_answers))

    def _answers_ended(self) -> None:
        """A run ended: start the next if one was asked for meanwhile or a quick call stopped this one."""
        if self._answers_wanted or (self.answer_task.preempted and self.answers_on.value):
            self._answers_wanted = False
            self.state.soon(guarded(self.error, self.run_answers))

    def _show_answers(self, payload) -> None:
        version, prompts, texts, n_edits = payload
        if version != self._version:
            self._answers_wanted = True  # the model or the rows changed while generating: not these
            return
        answers = dict(zip(prompts, texts))
        if n_edits == 0:
            self.answers_before.update(answers)
        self.answers_now = answers
        self._answers_version = version
        if self.state.fact is not None:
            self._draw(self.state.fact, n_edits)

    def _draw(self, fact, n_edits: int) -> None:
        out, styles = [], []
        t_true, t_new = fact.target_true, fact.target_new
        for row, now in zip(self.rows, self.last):
            before = self.before.get(row["prompt"])

            def p(res, target):
                if res is None or target is None:
                    return None
                try:
                    return res.target(target).prob
                except KeyError:
                    return None

            own = row["kind"] in ("implication", "free")  # scored on their own target, not the fact's
            other = (row["targets"] or [None])[0] if own else t_new
            # The question's one-example prefix is the same on every fact: show the question only.
            shown = "Q:" + row["prompt"].rsplit("Q:", 1)[-1].replace("\n", " ") if row["kind"] == "question" \
                else row["prompt"]
            entry = {
                "kind": row["kind"], "prompt": shown,
                "p(true) before": None if own else p(before, t_true),
                "p(true) now": None if own else p(now, t_true),
                "p(new) before": p(before, other), "p(new) now": p(now, other),
                "top-1 before": visible(before.top[0].token) if before is not None and before.top else "",
                "top-1 now": visible(now.top[0].token) if now.top else "",
            }
            if own and row["targets"]:
                entry["kind"] = f"{row['kind']} ({row['targets'][0]})"
            ok = _outcome(row, now, fact) if n_edits else None
            entry["outcome"] = "" if ok is None else ("as intended" if ok else "not as intended")
            answer = self.answers_now.get(row["prompt"])
            entry["answer before"] = first_sentence(self.answers_before.get(row["prompt"], ""))
            entry["answer now"] = first_sentence(answer) if answer is not None else ""
            entry["says"] = said(row, answer, fact)
            out.append(entry)
            styles.append("" if ok is None else (GOOD if ok else BAD))
        columns = ["kind", "prompt", "p(true) before", "p(true) now", "p(new) before", "p(new) now",
                   "top-1 before", "top-1 now", "outcome", "answer before", "answer now", "says"]
        fmt = {c: ".3f" for c in columns if c.startswith("p(")}
        self.table.value = table(out, columns, css="wb-probe-rows", row_styles=styles, formats=fmt,
                                 headers={"p(new) before": "p(new/target) before", "p(new) now": "p(new/target) now"})
        self.table_rows = out

    # -- generations ------------------------------------------------------------------
    def run_generations(self) -> None:
        fact = self.state.fact
        if fact is None:
            self.error.show("Choose a fact in the Fact tab first.")
            return
        prompts = self._generation_prompts(fact)
        model, n = self.state.model, int(self.gen_tokens.value)

        def work(token):
            n_edits = len(active_edits(model))
            missing = [p for p in prompts if (p, n) not in self.gen_before] if n_edits else []
            shown = [0.0]

            def growing(texts: list[str]) -> None:
                # The "now" texts as they grow, a few redraws a second: the first words are on
                # the page after the first step, not after the last.
                now = time.perf_counter()
                if now - shown[0] >= STREAM_EVERY:
                    shown[0] = now
                    self._show_generations((list(zip(prompts, texts)), n_edits, n), pending=missing, growing=True)

            # One left-padded batch per weight state: on a CPU the prompts cost little more
            # together than one alone (reading the unembedding dominates each step).
            out = list(zip(prompts, generate_many(model, prompts, max_new_tokens=n, cancel=token, on_text=growing)))
            if missing:
                # "Now" is what was asked for: shown at once, the "before" column follows.
                self._show_generations((out, n_edits, n), pending=missing)
                try:
                    with unedited(model):  # "before" without reverting anything
                        before = generate_many(model, missing, max_new_tokens=n, cancel=token)
                except Cancelled:
                    self._show_generations((out, n_edits, n))  # no "generating…" left behind a Cancel
                    raise
                self.gen_before.update({(p, n): g for p, g in zip(missing, before)})
            return out, n_edits, n

        self.gen_task.run(work, self._show_generations, busy="generating…")

    @staticmethod
    def _generation_prompts(fact) -> list[str]:
        return [fact.text, *fact.generation_prompts[:2]]

    def _show_generations(self, payload, pending: Sequence[str] = (), *, growing: bool = False) -> None:
        """The generations table; ``pending``: prompts whose "before" is still being generated;
        ``growing``: the "now" texts are still being generated."""
        results, n_edits, n = payload
        if n_edits == 0 and not growing:
            self.gen_before.update({(p, n): g for p, g in results})
        later = "generating on the unedited weights…" if not growing else "follows the “now” column"
        rows = [{"prompt": p, "before the edits": (later if p in pending else self.gen_before.get((p, n), "")),
                 "now": g + (" …" if growing else "")}
                for p, g in results]
        self.generations.value = table(rows, ["prompt", "before the edits", "now"], css="wb-generations-table")
