"""What the panels share and how long work runs: :class:`State` (the model, the current
fact, the last trace, the selection, the edit history, and who holds the model now),
:class:`Task` (a Run button with progress and Cancel, in a thread), and
:class:`BusyLine`, the app's one line saying what holds the model.

The UI never computes: every panel calls a library function and shows its result.
Long calls run in a background thread so the notebook stays responsive; the
thread's :class:`StepToken` is passed as ``cancel=`` to the library, whose
:func:`~workbench.runtime.progress.progress` checks it once per step, which both lets
the Cancel button stop the work and lets the panel count the steps for its bar.
"""

from __future__ import annotations

import asyncio
import html
import re
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import ipywidgets as widgets

from workbench.errors import WorkbenchError
from workbench.runtime.progress import Cancelled, CancelToken
from workbench.ui.widgets import ErrorLine


class StepToken(CancelToken):
    """A :class:`CancelToken` that also counts the steps the library reports.

    :func:`workbench.runtime.progress.progress` calls :meth:`check` once per item, so
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
        # As wide as its label ("Find knowledge neurons" was cut at the default width).
        self.button = widgets.Button(description=label, button_style="primary",
                                     layout=widgets.Layout(width="auto", min_width="148px"))
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
        of = f" of ~{self.bar.max}" if self._known_total else ""
        text = f"step {steps}{of} · {time.perf_counter() - self._start:.1f} s"
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
            # Only while it still holds the model: the run may let it go between the check above
            # and this line, and a plain report would then take the busy line back for good.
            state.report_busy(self, self.status.value, holding=True)

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
        # A bar only where the total is known: one that fills at the first of an unknown number
        # of steps (the greedy answers) says "done" while the work has just begun.
        self.bar.layout.visibility = "visible" if total else "hidden"
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
        #: (EditHandle, the Call that made it) for the Edit tab's edits: "Copy as code" shows them first.
        self.edit_calls: list = []
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
        self._busy_lock = threading.RLock()
        #: Controls whose use calls the model at once: disabled while a task holds it.
        self._quick: list[widgets.Widget] = []

    def needs_model(self, *controls: widgets.Widget) -> None:
        """Register quick controls (they call the model when used: a button, the fact list):
        disabled while a task that does not give way holds the model."""
        self._quick.extend(controls)

    def report_busy(self, task: Task | None, text: str, *, holding: bool = False) -> None:
        """A task took the model (``task``), reports progress, or let it go (``None``): emits ``"busy"``.

        Progress reports are throttled to two a second; taking and releasing always emit.
        ``holding``: only a progress report of the task that holds the model now (a heartbeat),
        never a taking.
        """
        with self._busy_lock:  # the check and the change as one: see Task._heartbeat
            if holding and task is not self.busy_task:
                return
            now = time.perf_counter()
            changed = task is not self.busy_task
            if not changed and now - self._busy_shown < 0.5:
                return
            if changed:
                self.busy_since = now if task is not None else None
                # A preemptible task (the greedy answers) gives way to quick calls: nothing to disable.
                blocking = task is not None and not task.preemptible
                for control in self._quick:
                    control.disabled = blocking
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

    def soon(self, fn: Callable[[], None], *, delay: float = 0.0) -> None:
        """Run ``fn`` once the widget callback now running has returned, or now when there is none.

        For background work that a change sets off but that must not take the model
        before the quick calls of the same click do (choosing a fact emits ``"fact"``,
        then the Fact panel probes its top tokens): in a kernel the callback is queued
        on the kernel's event loop; off it (a task's thread, a test) it runs at once,
        after the listeners before it. ``delay``: seconds to wait first on the kernel's loop
        (off it, none), e.g. for the page to draw this click's answers before more arrive.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._loop = loop
            if delay > 0:
                loop.call_later(delay, fn)
            else:
                loop.call_soon(fn)
        elif self._loop is not None and self._loop.is_running():
            # From a task's thread: onto the kernel's loop, after what the kernel is doing now.
            if delay > 0:
                self._loop.call_soon_threadsafe(self._loop.call_later, delay, fn)
            else:
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


class BusyLine(widgets.HBox):
    """The app's one busy line: which task holds the model, in which tab, for how long, its
    progress, and its Cancel; empty while the model is free.

    Args:
        state: the shared :class:`State`; the line redraws on its ``"busy"`` event.
        where: names the tab a task lives in ("" when unknown).
    """

    def __init__(self, state: State, *, where: Callable[[Task], str] | None = None) -> None:
        self.state = state
        self.where = where or (lambda task: "")
        self.text = widgets.HTML()
        self.text.add_class("wb-busy")
        self.cancel_button = widgets.Button(description="Cancel", button_style="warning",
                                            layout=widgets.Layout(display="none"))
        self.cancel_button.add_class("wb-busy-cancel")
        self.cancel_button.on_click(lambda _: self.cancel())
        super().__init__([self.text, self.cancel_button])
        state.on("busy", self.update)

    def cancel(self) -> None:
        task = self.state.busy_task
        if task is not None:
            task.cancel()

    def update(self) -> None:
        task = self.state.busy_task
        if task is None:
            self.text.value = ""
            self.cancel_button.layout.display = "none"
            return
        if task.preemptible:
            # The greedy answers refill after every change and stop for any click: the model is
            # not busy for the user, and a line about them read as noise (their own row in the
            # Probes tab says how far they are).
            self.text.value = ""
            self.cancel_button.layout.display = "none"
            return
        where = self.where(task)
        text = task.status.value or self.state.busy_text
        self.text.value = (f"<span style='color:#8a4b00'><b>Busy</b>: {html.escape(task.button.description)}"
                           + (f" ({html.escape(where)} tab)" if where else "")
                           + f" · {self.state.busy_seconds:.0f} s · {html.escape(_plain(text))} — choosing a "
                             "fact and the buttons that need the model wait for it</span>")
        self.cancel_button.layout.display = "" if not task.cancel_button.disabled else "none"


def _plain(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text or ""))
