"""Shared pieces of the panels: inline errors, long tasks with progress and Cancel,
and HTML tables.

The UI never computes: every panel calls a library function and shows its result.
Long calls run in a background thread so the notebook stays responsive; the
thread's :class:`StepToken` is passed as ``cancel=`` to the library, whose
:func:`~workbench.progress.progress` checks it once per step, which both lets
the Cancel button stop the work and lets the panel count the steps for its bar.
"""

from __future__ import annotations

import asyncio
import html
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import ipywidgets as widgets

from workbench.errors import WorkbenchError
from workbench.progress import Cancelled, CancelToken


def sentence(exc: BaseException) -> str:
    """One sentence for the user; never a traceback."""
    if isinstance(exc, Cancelled):
        return "Cancelled."
    if isinstance(exc, WorkbenchError):
        text = str(exc)
    else:
        # An unexpected failure still reads as a sentence; the traceback goes to the log.
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        text = "something went wrong (" + text.splitlines()[0] + ")"
    text = text.strip() or "something went wrong"
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?", ")")) else text + "."


class ErrorLine(widgets.HTML):
    """An inline message line: empty when all is well, a sentence otherwise."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_class("wb-error")
        self.last_exception: BaseException | None = None

    def show(self, exc_or_text: BaseException | str) -> None:
        if isinstance(exc_or_text, BaseException):
            self.last_exception = exc_or_text
            if not isinstance(exc_or_text, WorkbenchError):
                traceback.print_exception(exc_or_text)  # the log, not the panel
            text = sentence(exc_or_text)
        else:
            text = exc_or_text
        self.value = f'<span style="color:#b00020">{html.escape(text)}</span>'

    def note(self, text: str) -> None:
        self.value = f'<span class="wb-note" style="color:#555">{html.escape(text)}</span>'

    def clear(self) -> None:
        self.value = ""
        self.last_exception = None

    @property
    def text(self) -> str:
        """The message without markup (for tests)."""
        import re

        return html.unescape(re.sub(r"<[^>]+>", "", self.value))


class StepToken(CancelToken):
    """A :class:`CancelToken` that also counts the steps the library reports.

    :func:`workbench.progress.progress` calls :meth:`check` once per item, so
    the count is the number of finished steps of every loop that got this token.
    """

    def __init__(self, on_step: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.steps = 0
        self._on_step = on_step

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if cancelled, without counting a step."""
        super().check()

    def check(self) -> None:
        super().check()
        self.steps += 1
        if self._on_step is not None:
            self._on_step(self.steps)


#: Seconds between redraws of the busy line while a task runs without reporting steps.
HEARTBEAT = 1.0


class Task(widgets.HBox):
    """A Run button, a Cancel button, a progress bar and a status line.

    ``run(fn, on_done)`` calls ``fn(token)`` in a thread (``token`` is a
    :class:`StepToken`; pass it as ``cancel=`` to the library) and then
    ``on_done(result)`` — both off the kernel's main thread, which ipywidgets
    allows. Errors go to ``error`` as one sentence.

    Set ``background=False`` (tests) to run synchronously.
    """

    def __init__(self, label: str, *, css: str, error: ErrorLine, background: bool = True,
                 total: Callable[[], int | None] | None = None, state: State | None = None,
                 preemptible: bool = False) -> None:
        self.button = widgets.Button(description=label, button_style="primary")
        self.button.add_class(css)
        self.cancel_button = widgets.Button(description="Cancel", disabled=True)
        self.cancel_button.add_class(css + "-cancel")
        self.cancel_button.add_class("wb-cancel")
        self.bar = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="200px", visibility="hidden"))
        self.bar.add_class("wb-progress")
        self.status = widgets.HTML("")
        self.status.add_class("wb-status")
        super().__init__([self.button, self.cancel_button, self.bar, self.status])
        self.add_class(css + "-task")  # its status line, for a test or a stylesheet: ".<css>-task .wb-status"
        self.error = error
        self.background = background
        self.total = total
        self.state = state
        self.token: StepToken | None = None
        self.thread: threading.Thread | None = None
        self.cancel_button.on_click(lambda _: self.cancel())
        self.result: Any = None
        self.seconds: float | None = None
        self.preemptible = preemptible
        self._quiet = False
        self._active = False
        #: The last run was stopped by a quick call (see :meth:`State.using`), not by the user.
        self.preempted = False

    @property
    def running(self) -> bool:
        """Whether a run is in progress (seen from its own thread, the run is ending: False)."""
        # `_active` goes False before the ending run calls `after()`: a run that `after()` (or
        # the kernel's loop, a moment later) starts must not find this one still "running".
        return (self.thread is not None and self.thread.is_alive() and self._active
                and self.thread is not threading.current_thread())

    def cancel(self, *, quietly: bool = False) -> None:
        """Stop at the next step; ``quietly``: a newer request took over, which is not an error."""
        if self.token is not None:
            self._quiet = quietly
            self.preempted = self.preempted or quietly
            self.token.cancel()
            self.status.value = "" if quietly else "cancelling…"

    def join(self, timeout: float | None = None) -> None:
        """Wait for the running task (tests, scripts)."""
        if self.thread is not None:
            self.thread.join(timeout)

    def _step(self, steps: int) -> None:
        grew = steps > self.bar.max
        if grew:
            self.bar.max = steps + max(1, steps // 4)
        self.bar.value = steps
        elapsed = time.perf_counter() - self._work_start
        text = f"step {steps} of ~{self.bar.max} · {time.perf_counter() - self._start:.1f} s"
        left = remaining(elapsed, steps, self.bar.max) if self._known_total and not grew else None
        if left is not None:
            text += f" · ~{left:.0f} s left"
        self.status.value = text
        if self.state is not None:
            self.state.report_busy(self, text)

    def _heartbeat(self, token: StepToken) -> None:
        """Redraw the app's busy line every :data:`HEARTBEAT` seconds while this run holds the
        model, so that its seconds move also through work that reports no steps (a ROME edit
        said "0 s" until it ended)."""
        state = self.state
        while True:
            time.sleep(HEARTBEAT)
            # `token` is this run's: a later run of the same task starts its own heartbeat.
            if state is None or self.token is not token or not self._active or state.busy_task is not self:
                return
            state.report_busy(self, self.status.value)

    def run(self, fn: Callable[[StepToken], Any], on_done: Callable[[Any], None] | None = None,
            *, busy: str = "running…", after: Callable[[], None] | None = None) -> None:
        """Run ``fn(token)``, then ``on_done(result)`` if it finished; ``after()`` in any case,
        once the model is released (to start what should follow, also after a cancel)."""
        if self.running:
            self.error.show("Already running; press Cancel first.")
            return
        self.error.clear()
        self._quiet = False
        self.preempted = False
        self._active = True
        self.token = StepToken(self._step)
        total = None
        try:
            total = self.total() if self.total is not None else None
        except Exception:  # an estimate only
            total = None
        self.bar.max = max(1, total or 1)
        self._known_total = bool(total)
        self.bar.value = 0
        self.bar.bar_style = "info" if total else ""
        self.bar.layout.visibility = "visible"
        self.button.disabled = True
        self.cancel_button.disabled = False
        self.status.value = busy
        self._start = self._work_start = time.perf_counter()

        def work() -> None:
            held = False
            try:
                if self.state is not None:
                    # One computation on the shared model at a time: hooks are global to it.
                    while not self.state.lock.acquire(timeout=0.2):
                        holder = self.state.preemptible
                        if holder is not None and holder is not self and holder.running:
                            holder.cancel(quietly=True)  # the greedy answers give way; they start again after
                        self.status.value = f"waiting for {self.state.busy_with or 'another task'} to finish…"
                        self.token.check_cancelled()  # not a step: the task has not begun
                    held = True
                    self.state.busy_with = self.button.description
                    if self.preemptible:
                        self.state.preemptible = self
                    self.status.value = busy
                    self._work_start = time.perf_counter()
                    self.state.report_busy(self, busy)
                    if self.background:
                        threading.Thread(target=self._heartbeat, args=(self.token,), daemon=True).start()
                result = fn(self.token)
                if held:
                    self.state.finishing = self  # the model's work is done: quick calls wait for the release
                self.result = result
                self.seconds = time.perf_counter() - self._start
                if on_done is not None:
                    on_done(result)
                self.error.clear()  # a success clears what an earlier click left (e.g. "already running")
                self.status.value = f"done in {self.seconds:.1f} s"
            except BaseException as exc:  # noqa: BLE001 - shown inline, never raised into the kernel
                if isinstance(exc, Cancelled) and self._quiet:
                    self.status.value = "stopped for a newer request"
                elif isinstance(exc, Cancelled):
                    self.error.note("Cancelled.")  # the user's choice, not a failure
                    self.status.value = "cancelled"
                else:
                    self.error.show(exc)
                    self.status.value = "failed"
            finally:
                if self.state is not None and self.state.preemptible is self:
                    self.state.preemptible = None
                if held:
                    self.state.finishing = self
                    self.state.busy_with = None
                    self.state.report_busy(None, "")
                    self.state.finishing = None
                    self.state.lock.release()
                self.button.disabled = False
                self.cancel_button.disabled = True
                self.bar.layout.visibility = "hidden"
                self._active = False
                if after is not None:
                    try:
                        after()
                    except Exception as exc:  # noqa: BLE001 - shown inline, never raised into the kernel
                        self.error.show(exc)

        if self.background:
            self.thread = threading.Thread(target=work, daemon=True, name=f"workbench-{self.button.description}")
            self.thread.start()
        else:
            self.thread = None
            work()


def remaining(elapsed: float, steps: int, total: int) -> float | None:
    """Seconds left at the pace so far (None before the first step or past the end).

    Example:
        >>> remaining(10.0, 2, 6)
        20.0
    """
    if steps <= 0 or total <= steps:
        return None
    return elapsed / steps * (total - steps)


def split_arrow(line: str) -> tuple[str, str | None]:
    """``"prompt → target"`` (or ``->``) → ``(prompt, target)``; a line without an arrow → ``(line, None)``.

    Example:
        >>> split_arrow(" The Louvre is in the city of -> Paris "), split_arrow("Paris is")
        (('The Louvre is in the city of', 'Paris'), ('Paris is', None))
    """
    line = line.strip()
    for arrow in ("→", "->"):
        if arrow in line:
            prompt, target = (part.strip() for part in line.rsplit(arrow, 1))
            return prompt, target
    return line, None


def guarded(error: ErrorLine, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a widget callback so that any exception becomes an inline sentence."""

    def call(*args, **kwargs):
        try:
            error.clear()
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            error.show(exc)
            return None

    return call


def table(rows: Sequence[dict], columns: Sequence[str], *, css: str = "wb-table",
          row_styles: Sequence[str] | None = None, formats: dict[str, str] | None = None,
          headers: dict[str, str] | None = None) -> str:
    """An HTML table (escaped) with optional per-row inline styles."""
    formats = formats or {}
    headers = headers or {}
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(headers.get(c, c))}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        style = row_styles[i] if row_styles else ""
        cells = []
        for c in columns:
            v = row.get(c, "")
            if v is None:
                v = ""
            elif c in formats and isinstance(v, (int, float)):
                v = format(v, formats[c])
            cells.append(f"<td style='padding:2px 8px'>{html.escape(str(v))}</td>")
        body.append(f"<tr class='wb-row' style='{style}'>{''.join(cells)}</tr>")
    return (f"<table class='{css}' style='border-collapse:collapse;font-size:12px'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def parse_ints(text: str, *, what: str = "layers") -> list[int] | None:
    """``"5"``, ``"4, 5, 6"`` or ``"4-6"`` → a list; empty → None."""
    text = (text or "").strip()
    if not text:
        return None
    out: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, None)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except (TypeError, ValueError):
            raise WorkbenchError(f"{what} must be integers like '5' or '4,5,6' or '4-6', got {text!r}") from None
    return out


def parse_hparams(text: str) -> dict[str, Any]:
    """``key=value`` lines (or JSON) → a dict; values read as JSON where they parse."""
    import json

    text = (text or "").strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkbenchError(f"hyperparameters are not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise WorkbenchError("hyperparameters must be a JSON object or key=value lines")
        return value
    out: dict[str, Any] = {}
    for line in text.replace(",", "\n").splitlines():
        line = line.strip()
        if not line:
            continue
        if "=" not in line:
            raise WorkbenchError(f"hyperparameter line {line!r} is not key=value")
        key, value = (s.strip() for s in line.split("=", 1))
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def section(title: str) -> widgets.HTML:
    return widgets.HTML(f"<b>{html.escape(title)}</b>")


#: Seconds a quick call waits for a preemptible task to stop at its next step.
PREEMPT_WAIT = 30.0
#: Seconds a quick call waits for a task that has just taken the model to say whether it gives way.
GRACE = 0.5


class State:
    """What the panels share: the model, the current fact, the last trace, the
    selected (position, layer) and the edit history. Panels subscribe to events:

    - ``"fact"``: a new current fact (``state.fact``);
    - ``"trace"``: a new trace result (``state.trace``);
    - ``"select"``: a (position, layer) chosen, e.g. by clicking the heatmap;
    - ``"weights"``: the model changed (an edit applied or reverted).
    """

    def __init__(self, model) -> None:
        self.model = model
        self.fact = None
        self.trace = None
        self.selection: tuple[int, int] | None = None
        self.history: list = []  # every EditHandle made in this app, oldest first
        self._listeners: dict[str, list[Callable[[], None]]] = {}
        self.select_tab: Callable[[str], None] | None = None
        self.lock = threading.RLock()
        self.busy_with: str | None = None
        #: The running task that quick calls may stop (see :meth:`using`).
        self.preemptible: Task | None = None
        #: A task whose model work is done but which still holds the lock (drawing its result).
        self.finishing: Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the kernel's, once seen (see :meth:`soon`)
        #: The task holding the model now, what it says about itself, and since when.
        self.busy_task: Task | None = None
        self.busy_text = ""
        self.busy_since: float | None = None
        self._busy_shown = 0.0
        #: Buttons whose click calls the model at once: disabled while a task holds it.
        self._quick: list[widgets.Button] = []

    def needs_model(self, *buttons: widgets.Button) -> None:
        """Register quick buttons (they call the model in the click): disabled while a task runs."""
        self._quick.extend(buttons)

    def report_busy(self, task: Task | None, text: str) -> None:
        """A task took the model (``task``), reports progress, or let it go (``None``): emits ``"busy"``.

        Progress reports are throttled to two a second; taking and releasing always emit.
        """
        now = time.perf_counter()
        changed = task is not self.busy_task
        if not changed and now - self._busy_shown < 0.5:
            return
        if changed:
            self.busy_since = now if task is not None else None
            # A preemptible task (the greedy answers) gives way to quick calls: nothing to disable.
            blocking = task is not None and not task.preemptible
            for button in self._quick:
                button.disabled = blocking
        self.busy_task, self.busy_text, self._busy_shown = task, text, now
        self.emit("busy")

    @property
    def busy_seconds(self) -> float:
        return 0.0 if self.busy_since is None else time.perf_counter() - self.busy_since

    @contextmanager
    def using(self):
        """Hold the model for a quick call, or refuse at once (never block the kernel).

        A task started as ``preemptible`` (the Probes panel's greedy answers, refilled
        after every change) gives way: it is cancelled and the call waits for it to stop
        at its next step, at most :data:`PREEMPT_WAIT` seconds.
        """
        acquired = self.lock.acquire(blocking=False)
        holder = self.preemptible
        if not acquired and holder is None:
            # A task that has just taken the lock says whether it is preemptible a moment later
            # (the greedy answers, restarted from a task's thread right after a click's first call,
            # did so in JupyterLab): wait that moment before calling the model busy.
            deadline = time.perf_counter() + GRACE
            while not acquired and self.preemptible is None and time.perf_counter() < deadline:
                acquired = self.lock.acquire(timeout=0.01)
            holder = self.preemptible
        if not acquired and holder is not None and holder.running:
            holder.cancel(quietly=True)
            acquired = self.lock.acquire(timeout=PREEMPT_WAIT)
        if not acquired and self.finishing is not None:
            # A task that has finished with the model is drawing its result and letting it go
            # (a click right after a trace's "done" found it there under load): wait for that.
            acquired = self.lock.acquire(timeout=PREEMPT_WAIT)
        if not acquired:
            raise WorkbenchError(f"the model is busy ({self.busy_with or 'a running task'}); "
                                 "wait for it to finish or press its Cancel button")
        try:
            yield self.model
        finally:
            self.lock.release()

    def soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the widget callback now running has returned, or now when there is none.

        For background work that a change sets off but that must not take the model
        before the quick calls of the same click do (choosing a fact emits ``"fact"``,
        then the Fact panel probes its top tokens): in a kernel the callback is queued
        on the kernel's event loop; off it (a task's thread, a test) it runs at once,
        after the listeners before it.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._loop = loop
            loop.call_soon(fn)
        elif self._loop is not None and self._loop.is_running():
            # From a task's thread: onto the kernel's loop, after what the kernel is doing now.
            self._loop.call_soon_threadsafe(fn)
        else:
            fn()

    def on(self, event: str, fn: Callable[[], None]) -> None:
        self._listeners.setdefault(event, []).append(fn)

    def emit(self, event: str) -> None:
        for fn in self._listeners.get(event, []):
            fn()

    def set_fact(self, fact) -> None:
        self.fact = fact
        self.trace = None
        self.selection = None
        self.emit("fact")

    def select(self, position: int, layer: int, *, open_panel: bool = True) -> None:
        self.selection = (int(position), int(layer))
        self.emit("select")
        if open_panel and self.select_tab is not None:
            self.select_tab("memories")
