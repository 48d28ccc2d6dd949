"""One :func:`~workbench.evaluation.evaluate` run in progress, as its runners share it.

:class:`Run` holds the model, the facts selected, the checked settings, the clock and
the edits made (so that ``evaluate`` reverts them whatever happens); a runner
(:mod:`~workbench.evaluation.independent`, :mod:`~workbench.evaluation.sequential`)
hands back an :class:`Outcome`.

Example:
    >>> run = Run(model, facts, EvalSettings(method="in-context"), record={}, cancel=None,
    ...           called=time.perf_counter(), n_skipped=0)   # doctest: +SKIP
    >>> run.perplexity()                                      # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.evaluation.fluency import fluency
from workbench.evaluation.perplexity import perplexity
from workbench.facts import Fact

if TYPE_CHECKING:
    from workbench.evaluation.report import CurvePoint, FactRow
    from workbench.evaluation.settings import EvalSettings
    from workbench.core.model import Model
    from workbench.runtime.progress import CancelToken


@dataclass
class Run:
    """The state a runner reads and adds to.

    Attributes:
        record: the report's ``settings`` (:meth:`EvalSettings.record`).
        called: ``time.perf_counter()`` when ``evaluate`` was called; ``time_limit`` counts from it.
        n_skipped: facts dropped as unknown to the model.
        kept: independent mode: the rows of a resumed report, not run again.
        perplexity_before: the unedited model's perplexity (None without ``drift``).
        handles: every edit kept by :meth:`edit`, oldest first.
        checkpoint: sequential mode: the folder that keeps the state after each curve point
            (:mod:`~workbench.evaluation.checkpoint`), or None.
        edit_seconds: the time of each :meth:`edit` call.
        call_kwargs: the keyword arguments of every edit (:meth:`EvalSettings.call_kwargs`).
    """

    model: Model
    facts: list[Fact]
    settings: EvalSettings
    record: dict
    cancel: CancelToken | None
    called: float
    n_skipped: int
    kept: list[FactRow] = field(default_factory=list)
    perplexity_before: float | None = None
    handles: list = field(default_factory=list)
    checkpoint: Path | None = None
    edit_seconds: list[float] = field(default_factory=list)
    call_kwargs: dict = field(init=False)

    def __post_init__(self) -> None:
        self.call_kwargs = self.settings.call_kwargs()

    def out_of_time(self) -> bool:
        """Past the time limit: no new edit may start."""
        limit = self.settings.time_limit
        return limit is not None and time.perf_counter() - self.called > limit

    def perplexity(self) -> float:
        s = self.settings
        return perplexity(self.model, n_texts=s.perplexity_texts, max_tokens=s.perplexity_tokens)

    def fluency(self, prompts: list[str]) -> float:
        return fluency(self.model, prompts, max_new_tokens=self.settings.fluency_tokens)[0]

    def edit(self, batch: list[Fact]):
        """Edit ``batch`` in one call, kept until :meth:`revert`: ``(handle, seconds)``."""
        # Looked up at each call, so that a patched workbench.editing.edit is the one used.
        from workbench.editing import edit

        t0 = time.perf_counter()
        h = edit(self.model, batch if len(batch) > 1 else batch[0], method=self.settings.method, **self.call_kwargs)
        self.handles.append(h)
        self.edit_seconds.append(time.perf_counter() - t0)
        return h, self.edit_seconds[-1]

    def revert(self) -> None:
        """Revert every edit :meth:`edit` made that is still applied."""
        # Newest first: each revert is then exact, whatever the methods touched.
        for h in reversed(self.handles):
            if h.active:
                h.revert()


@dataclass
class Outcome:
    """What a runner measured: the rows (in fact order), the curve, the drift summary
    (``fluency_before``, ``fluency``, ``perplexity_after``), and why it stopped, if early."""

    rows: list[FactRow]
    extra: dict
    curve: list[CurvePoint] = field(default_factory=list)
    stopped_early: bool = False
    interrupted: bool = False
