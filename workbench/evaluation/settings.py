"""The settings of one :func:`~workbench.evaluation.evaluate` run, checked together once.

:class:`EvalSettings` refuses a bad value or a combination that does not fit (a
``batch_size`` outside sequential mode, ``workers`` with ``on_row``, ...) when it is
made, with the same one-line :class:`~workbench.errors.WorkbenchError` ``evaluate``
raises; the runners then read it and never check again.

Example:
    >>> EvalSettings(method="rome", mode="sequential", batch_size=10).batch_size
    10
    >>> EvalSettings(method="rome", mode="batch", drift=False)     # doctest: +SKIP
    WorkbenchError: drift=False is for independent mode: ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workbench.errors import WorkbenchError
from workbench.evaluation import generated, intervals

if TYPE_CHECKING:
    from workbench.evaluation.report import EvalReport
    from workbench.core.model import Model

MODES = ("independent", "sequential", "batch")
#: The largest value of each whole-number setting: beyond them a run asks for more memory or
#: time than any machine here has (the held-out set holds about 1,000 texts).
RANGES = {"every": 1_000_000, "limit": 1_000_000, "perplexity_texts": 1000, "perplexity_tokens": 2048,
          "fluency_tokens": 1000, "fluency_prompts": 100, "batch_size": 10_000, "search_chunk": 1000,
          "score_sample": 1_000_000}
MAX_TIME_LIMIT = 30 * 24 * 3600


@dataclass(frozen=True)
class EvalSettings:
    """Every setting of an :func:`evaluate` run: its arguments but the model, the facts,
    ``cancel`` and ``resume``.

    Attributes:
        method: an editing method (see :data:`workbench.editing.METHODS`).
        mode: ``"independent"``, ``"sequential"`` or ``"batch"`` (see :mod:`~workbench.evaluation.evaluate`).
        every: sequential: a curve point every ``every`` edits; independent:
            fluency and perplexity are measured on every ``every``-th fact.
        limit: evaluate at most this many (known) facts.
        revert: sequential/batch: revert all edits at the end (weights come back
            bitwise). Independent mode always reverts each edit.
        known_only: first drop the facts the model gets wrong (counted as ``n_skipped``).
        perplexity_texts, perplexity_tokens: held-out texts and their length for perplexity.
        fluency_tokens: tokens generated per fluency prompt.
        fluency_prompts: sequential/batch: size of the fixed set of generation prompts.
        time_limit: seconds after which no new edit is started; the report then
            covers the facts done so far (sequential: up to the last curve point) and
            its summary says ``stopped_early``. For runs that must end on time (a class,
            a lent machine) without losing what was measured.
        metrics: the measures to take, from
            :data:`~workbench.evaluation.generated.METRICS` (a list or ``"a,b"``);
            the default is all but the slow ``letter``. ``teacher`` is always taken.
            Kept as :func:`~workbench.evaluation.generated.check_metrics` gives it.
        workers: independent mode: facts run on this many Ray actors, each with its own copy
            of the model (``"auto"``: one per CPU; a :class:`~workbench.runtime.cluster.Pool`: its warm
            workers, left running after); the report is the one a serial run gives,
            in the same order. Needs the ``cluster`` extra. A fact whose worker fails is tried
            once more on another worker, then reported as that row's ``error``.
        address: with ``workers``: ``None`` starts a local Ray for the run; ``"auto"`` or
            ``"ray://host:port"`` uses a running cluster (its nodes need the workbench installed).
        batch_size: sequential mode: facts per edit call (1: one fact at a time; AlphaEdit's
            papers use 100). The batches stay applied one after another.
        drift: measure perplexity and fluency (the model's drift). ``False``, in independent
            mode only: skip both (``None`` in the summary); on a CPU they are most of a short
            comparison's time (the app's Compare of a handful of facts).
        on_row: independent mode, one worker: called after every fact with the report so far
            (its rows, and a summary of them with ``partial=True`` and ``n_total``), so that a
            caller can show a comparison fact by fact; the app's Compare table fills in this way.
        edit_kwargs: passed to :func:`workbench.editing.edit` (``layers``, hyperparameters).
        search_chunk: independent mode, one worker: facts whose target searches (v*) run as one
            batch before they are edited one by one, for methods that declare their search
            (``MethodSpec.plan_search``: ROME, EMMET). Default 1, each fact's search in its own edit:
            on 2 CPU cores the search is compute-bound and 8 a batch was only 1.07x faster
            (docs/performance.md); batches are for a GPU. 1 is also what
            ``workers`` always do (a parallel run gives the report of a serial one with 1).
        score_sample: sequential mode: the intermediate curve points score a fixed, seeded
            sample of this many of the facts edited so far; the last point scores every fact
            (None: every point scores every fact).
        stop_after: sequential mode: stop at the first curve point at or past this many edits,
            scored like any intermediate point, so that a run of ``limit`` facts can be taken in
            parts that each end where a longer run's curve has a point (with a ``checkpoint``, a
            later call goes on from it). None: run to ``limit``.

    Raises:
        WorkbenchError: the first value or combination that does not fit, named.
    """

    method: str
    mode: str = "independent"
    every: int = 10
    limit: int | None = None
    revert: bool = True
    known_only: bool = True
    perplexity_texts: int = 10
    perplexity_tokens: int = 128
    fluency_tokens: int = 40
    fluency_prompts: int = 5
    time_limit: float | None = None
    metrics: Sequence[str] | str = generated.DEFAULT_METRICS
    workers: Any = 1
    address: str | None = None
    batch_size: int = 1
    drift: bool = True
    on_row: Callable[[EvalReport], None] | None = None
    edit_kwargs: dict = field(default_factory=dict)
    search_chunk: int = 1
    score_sample: int | None = 200
    stop_after: int | None = None

    def __post_init__(self) -> None:
        mode = self.mode
        if mode not in MODES:
            raise WorkbenchError(f"unknown evaluation mode {mode!r}; choose one of {', '.join(MODES)}")
        batch_size = self.batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise WorkbenchError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > 1 and mode != "sequential":
            raise WorkbenchError("batch_size is for sequential runs (batches kept one after another); "
                                 + ("an independent run edits one fact per call" if mode == "independent"
                                    else "a batch run edits all facts in one call"))
        if self.stop_after is not None:
            if isinstance(self.stop_after, bool) or not isinstance(self.stop_after, int) or self.stop_after < 1:
                raise WorkbenchError(f"stop_after must be a positive integer, got {self.stop_after!r}")
            if mode != "sequential":
                raise WorkbenchError(f"stop_after ends a sequential run at a curve point; a {mode} run has none "
                                     "(use limit)")
        if not self.drift and mode != "independent":
            raise WorkbenchError(f"drift=False is for independent mode: {mode} mode's curve is one of perplexity "
                                 "and fluency as well as the rates")
        if self.on_row is not None and mode != "independent":
            raise WorkbenchError(f"on_row reports independent runs fact by fact; a {mode} run's rows are "
                                 "scored together at its curve points")
        if not isinstance(self.every, int) or self.every < 1:
            raise WorkbenchError(f"every must be a positive integer, got {self.every!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise WorkbenchError(f"limit must be a positive integer, got {self.limit!r}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise WorkbenchError(f"time_limit must be a positive number of seconds, got {self.time_limit!r}")
        for name, high in RANGES.items():
            value = getattr(self, name)
            if value is None and name in ("limit", "score_sample"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise WorkbenchError(f"{name} must be a whole number from 1 to {high:,}, got {value!r}")
        if self.time_limit is not None and not (0 < self.time_limit <= MAX_TIME_LIMIT):
            raise WorkbenchError(f"time_limit must be a positive number of seconds up to {MAX_TIME_LIMIT:,} "
                                 f"(30 days), got {self.time_limit!r}")
        from workbench.runtime.cluster import check_workers
        from workbench.editing import method_spec

        method_spec(self.method)  # an unknown method, refused by name
        # Frozen: the checked forms replace what was given, once.
        object.__setattr__(self, "metrics", generated.check_metrics(self.metrics))
        workers = check_workers(self.workers)
        object.__setattr__(self, "workers", workers)
        if workers != 1 and mode != "independent":
            raise WorkbenchError(f"workers={workers} splits independent runs only: a {mode} run's edits build on "
                                 "each other (run several methods or settings side by side instead)")
        if workers != 1:
            object.__setattr__(self, "search_chunk", 1)  # each worker edits one fact at a time
        if workers != 1 and self.on_row is not None:
            raise WorkbenchError(f"on_row is for runs on one worker; workers={workers} finish facts out of order")

    def check_model(self, model: Model) -> None:
        """Refuse what does not fit ``model``: a parallel run over applied edits, a layer it lacks.

        Example:
            >>> EvalSettings(method="rome", edit_kwargs={"layers": [99]}).check_model(model)  # doctest: +SKIP
            WorkbenchError: ...layer 99...
        """
        from workbench.editing import active_edits

        if self.workers != 1 and active_edits(model):
            raise WorkbenchError(f"workers={self.workers}: {len(active_edits(model))} edit(s) are applied to this "
                                 "model, and the workers load it from disk without them; revert them first or use "
                                 "workers=1")
        if self.edit_kwargs.get("layers") is not None:
            # Checked once here: a bad layer would otherwise fail every fact, one by one.
            for layer in self.edit_kwargs["layers"]:
                model.layer_index(layer)

    def call_kwargs(self) -> dict:
        """The keyword arguments of every :func:`~workbench.editing.edit` call of the run.

        Example:
            >>> EvalSettings(method="rome").call_kwargs()
            {'min_prob': 0.0, 'check_known': False}
        """
        from workbench.editing import method_spec

        call_kwargs = dict(self.edit_kwargs)
        # Evaluation scores every edit as it is made, the ones that miss their target too.
        call_kwargs.setdefault("min_prob", 0.0)
        if self.known_only and "check_known" not in call_kwargs and method_spec(self.method).checks_known:
            # Every fact was just checked to be known; the method's own check would probe it again.
            call_kwargs["check_known"] = False
        return call_kwargs

    def record(self, model: Model) -> dict:
        """The report's ``settings``: the arguments that shaped the numbers, JSON-ready."""
        return dict(every=self.every, limit=self.limit, revert=self.revert, known_only=self.known_only,
                    perplexity_texts=self.perplexity_texts, perplexity_tokens=self.perplexity_tokens,
                    fluency_tokens=self.fluency_tokens, fluency_prompts=self.fluency_prompts,
                    time_limit=self.time_limit, device=str(model.device),
                    workers=getattr(self.workers, "workers", self.workers),
                    batch_size=self.batch_size, drift=self.drift, search_chunk=self.search_chunk,
                    score_sample=self.score_sample, stop_after=self.stop_after,
                    edit_kwargs={k: v for k, v in self.edit_kwargs.items()}, metrics=list(self.metrics),
                    intervals=dict(method="percentile bootstrap over facts", samples=intervals.SAMPLES,
                                   seed=intervals.SEED, level=intervals.LEVEL))
