"""Independent work on Ray actors, each holding its own copy of the model.

Evaluations of many facts, average indirect effects and sweeps are embarrassingly
parallel: every fact (or setting) starts from the unedited model. :class:`Pool`
starts ``workers`` Ray actors that each load the driver's model by name (from the
shared disk cache, checked against the driver's weight fingerprint) and
:meth:`Pool.map` runs ``fn(model, item)`` over the items on them, one item per idle
actor, in the items' order. Results come back in that order whatever finished first.

What a map guarantees:

- Items are handed out in order, so a run stopped by ``stop()`` (a time limit) has
  done a prefix of the items; the ones it never started come back as ``None``.
- A failed item (its function raised, or its actor died) is tried once more on
  another actor (a fresh one replaces a dead actor), then reported as an
  :class:`Outcome` with ``error`` set; nothing finished is lost.
- ``shared``: work several items need (the unedited scores of a chunk of facts) is
  done once, on the actor that first needs it; other actors wait for its result
  through Ray's object store instead of doing it again.

Without an ``address`` a local Ray is started for the pool with the machine's cores
and stopped after it; ``address="auto"`` or ``"ray://host:port"`` joins a running
cluster. Ray is an optional extra: ``pip install -e '.[cluster]'``.

Example:
    >>> def top_token(model, prompt):                                  # doctest: +SKIP
    ...     return model.str_tokens(model.logits(model.tokens(prompt))[0, -1].argmax())
    >>> with Pool(model, workers=2) as pool:                           # doctest: +SKIP
    ...     outcomes = pool.map(top_token, ["The capital of France is", "Paris is in"])
    >>> [o.value for o in outcomes]                                    # doctest: +SKIP
"""

from __future__ import annotations

import collections
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.runtime.progress import CancelToken, progress

log = logging.getLogger("workbench")

INSTALL_HINT = "pip install -e '.[cluster]' (or pip install ray)"
#: Failed items are tried this many more times, on another actor.
RETRIES = 1


def ray_available() -> bool:
    """Whether the optional ``ray`` package is installed."""
    return importlib.util.find_spec("ray") is not None


def check_workers(workers) -> int | str:
    """``workers`` if it is a positive integer or ``"auto"``; Ray must be installed for more than one.

    Example:
        >>> check_workers(1)
        1

    Raises:
        WorkbenchError: not a positive integer, or more than one without Ray installed.
    """
    if isinstance(workers, Pool):
        return workers
    if workers == "auto":
        parallel = True
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise WorkbenchError(f"workers must be a positive integer or 'auto', got {workers!r}")
    else:
        parallel = workers > 1
    if parallel and not ray_available():
        raise WorkbenchError(f"workers={workers} runs on Ray, which is not installed: {INSTALL_HINT}; "
                             "or use workers=1")
    return workers


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the driver's model: name, dtype, placement, and the fingerprint to check.

    Example:
        >>> spec = ModelSpec.of(model)                                 # doctest: +SKIP
        >>> spec.load().fingerprint == model.fingerprint               # doctest: +SKIP
        True
    """

    name: str
    dtype: str
    device: str | None
    device_map: Any
    fingerprint: str

    @classmethod
    def of(cls, model) -> ModelSpec:
        hf = model.hf_model
        dtype = str(next(hf.parameters()).dtype).removeprefix("torch.")
        # What the driver asked for ("auto" places blocks over the worker's own GPUs), else the
        # placement accelerate chose; a one-device model goes to a device of the driver's type.
        device_map = getattr(model, "device_map", None) or getattr(hf, "hf_device_map", None)
        if isinstance(device_map, dict):
            device_map = dict(device_map)
        device = None if device_map else model.device.type
        return cls(model.name, dtype, device, device_map, model.fingerprint)

    def load(self):
        import torch

        from workbench.core.model import load_model

        model = load_model(self.name, dtype=getattr(torch, self.dtype), device=self.device, device_map=self.device_map)
        if model.fingerprint != self.fingerprint:
            raise WorkbenchError(
                f"the worker's {self.name} has weights {model.fingerprint}, the driver's {self.fingerprint}: "
                "a worker can only load the model as it is on disk (edited weights in the driver are not shipped)"
            )
        return model


@dataclass
class Outcome:
    """One item's result: ``value`` when it ran, ``error`` (one line) when it failed every try."""

    index: int
    value: Any = None
    error: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


class _Worker:
    """The actor: one model, and the calls :class:`Pool` sends it."""

    def __init__(self, spec: ModelSpec, files: dict[str, bytes], paths: Sequence[str], threads: int) -> None:
        # Before torch loads (Ray starts workers without it): the thread count the pool chose.
        os.environ["WORKBENCH_THREADS"] = str(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        from workbench.runtime import threads as thread_policy

        thread_policy.apply()
        torch.set_num_threads(threads)
        for p in paths:
            if p not in sys.path:
                sys.path.insert(0, p)
        _write_cache_files(files)
        self.model = spec.load()

    def ready(self) -> int:
        return os.getpid()

    def write_files(self, files: dict[str, bytes]) -> None:
        _write_cache_files(files)

    def call(self, fn: Callable, item, *shared):
        return fn(self.model, item, *shared)


def _write_cache_files(files: dict[str, bytes]) -> None:
    """Files the driver computed (key statistics), written into this node's cache unless there."""
    from workbench.runtime.cache import cache_dir

    root = cache_dir()
    for rel, data in files.items():
        target = root / rel
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
        tmp.write_bytes(data)
        os.replace(tmp, target)  # a reader never sees half a file


def cache_files(paths: Sequence[Path]) -> dict[str, bytes]:
    """Cache entries to ship to the workers, by path inside the cache (for :class:`Pool` ``files``)."""
    from workbench.runtime.cache import cache_dir

    root = cache_dir().resolve()
    out = {}
    for p in paths:
        p = Path(p).resolve()
        try:
            rel = p.relative_to(root)
        except ValueError:
            raise WorkbenchError(f"{p} is not inside the workbench cache {root}") from None
        out[str(rel)] = p.read_bytes()
    return out


def _describe(exc: BaseException) -> str:
    """One line for a failed try: the function's own exception, or why the actor died."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


class Pool:
    """``workers`` Ray actors holding the model; see the module docstring.

    Args:
        model: the driver's loaded model; workers load the same by name and check the fingerprint.
        workers: how many actors (``"auto"``: one per CPU of the local machine or the cluster).
        address: ``None`` starts a local Ray for the pool; ``"auto"`` or ``"ray://..."`` joins a cluster.
        files: cache entries each worker writes into its node's cache before loading (see :func:`cache_files`).
        paths: folders put on the workers' ``sys.path`` (for functions defined in scripts).
        threads: torch threads per actor (default: the local cores divided among the actors).

    Raises:
        WorkbenchError: Ray not installed, bad ``workers``, or the workers' model is not the driver's.
    """

    def __init__(self, model, workers: int | str = "auto", *, address: str | None = None,
                 files: dict[str, bytes] | None = None, paths: Sequence[str | Path] = (),
                 threads: int | None = None) -> None:
        check_workers(workers)
        if not ray_available():
            raise WorkbenchError(f"the cluster pool runs on Ray, which is not installed: {INSTALL_HINT}")
        import ray

        self._ray = ray
        self._started_ray = False
        if not ray.is_initialized():
            cores = os.cpu_count() or 1
            if address is None:
                # Local: Ray's own processes log to files only, no dashboard; every actor may start
                # even when there are more actors than cores (they then share them).
                n = cores if workers == "auto" else workers
                ray.init(num_cpus=max(cores, n), include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False,
                         object_store_memory=_object_store_bytes(), _system_config=LOCAL_SYSTEM_CONFIG)
            else:
                try:
                    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
                except Exception as exc:
                    raise WorkbenchError(f"cannot join the Ray cluster at {address!r}: {_describe(exc)}") from None
            self._started_ray = True
        if workers == "auto":
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.workers = int(workers)
        local_cores = os.cpu_count() or 1
        self.threads = threads or max(1, local_cores // self.workers)
        self._spec = ModelSpec.of(model)
        self._files = dict(files or {})
        self._files_ref = ray.put(self._files)
        self._paths = [str(Path(p).resolve()) for p in paths]
        self._actor_class = ray.remote(num_cpus=1 if address is None else self.threads)(_Worker)
        self._actors: dict[int, Any] = {}
        self._next_id = 0
        self._replacements = 0
        try:
            for _ in range(self.workers):
                self._start_actor()
            # Fail here, with the reason, if a worker cannot load the model.
            ray.get([a.ready.remote() for a in self._actors.values()])
        except Exception as exc:
            self.close()
            if isinstance(exc, WorkbenchError):
                raise
            raise WorkbenchError(f"the Ray workers could not start: {_describe(exc)}") from None

    def _start_actor(self) -> int:
        wid = self._next_id
        self._next_id += 1
        self._actors[wid] = self._actor_class.remote(self._spec, self._files_ref, self._paths, self.threads)
        return wid

    @property
    def fingerprint(self) -> str:
        """The weights every worker holds."""
        return self._spec.fingerprint

    def add_files(self, files: dict[str, bytes]) -> None:
        """Cache entries for every worker (and for any started later to replace one)."""
        new = {k: v for k, v in files.items() if k not in self._files}
        if not new:
            return
        self._files.update(new)
        self._files_ref = self._ray.put(self._files)
        self._ray.get([a.write_files.remote(new) for a in self._actors.values()])

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the actors (and the local Ray this pool started)."""
        ray = self._ray
        for actor in self._actors.values():
            try:
                ray.kill(actor)
            except Exception:
                pass
        self._actors.clear()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
            self._started_ray = False

    def map(
        self,
        fn: Callable,
        items: Sequence,
        *,
        desc: str = "",
        shared: Callable[[int], tuple[Hashable, Callable, tuple]] | None = None,
        cancel: CancelToken | None = None,
        stop: Callable[[], bool] | None = None,
        retries: int = RETRIES,
    ) -> list[Outcome | None]:
        """``fn(model, item[, shared value])`` for every item, on the actors; results in item order.

        Args:
            fn: a module-level function (Ray pickles it); exceptions it raises count as a failed try.
            items: what to run it on (picklable).
            desc: the progress bar's label (one bar for all workers).
            shared: for item ``i``, ``(key, setup, args)``: ``setup(model, *args)`` runs once per key,
                on the actor that first needs it, and its result is passed to ``fn`` as a third argument.
            cancel: a token; when tripped the map stops and raises ``Cancelled`` (actors are stopped).
            stop: checked before each new item is handed out; once true, no new item starts
                (those in flight finish) and the items never started come back as ``None``.
            retries: further tries of a failed item, each on another actor where there is one.

        Raises:
            Cancelled: ``cancel`` tripped. KeyboardInterrupt: Ctrl-C (the actors are stopped either way).
        """
        run = _MapRun(self, fn, items, shared=shared, stop=stop, retries=retries)
        n, results, attempts, errors = len(items), run.results, run.attempts, run.errors
        finished = False
        try:
            for _ in progress(run.completions(), desc=desc, total=n, cancel=cancel):
                pass
            finished = True
        except KeyboardInterrupt:
            raise PoolInterrupted(results) from None
        except WorkbenchError as exc:
            if "every Ray worker died" not in str(exc):
                raise
            for i in range(n):
                if results[i] is None and attempts[i]:
                    results[i] = Outcome(i, error=f"failed: {errors.get(i, str(exc))}", attempts=attempts[i])
            finished = True
        finally:
            if not finished:
                # Cancelled or Ctrl-C: what is running cannot be interrupted in a plain actor; stop them.
                self.close()
        return results


class _MapRun:
    """The bookkeeping of one :meth:`Pool.map`: what is queued, in flight, retried and done."""

    def __init__(self, pool: Pool, fn: Callable, items: Sequence, *, shared, stop, retries: int) -> None:
        self.pool, self.fn, self.items = pool, fn, items
        self.shared, self.stop, self.retries = shared, stop, retries
        n = len(items)
        self.results: list[Outcome | None] = [None] * n
        self.queue = collections.deque(range(n))
        self.retry_queue: collections.deque[int] = collections.deque()
        self.attempts = collections.Counter()
        self.tried_on: dict[int, set[int]] = collections.defaultdict(set)
        self.errors: dict[int, str] = {}
        self.inflight: dict[Any, tuple[int, int]] = {}  # ref -> (item, worker)
        self.busy: set[int] = set()
        self.shared_refs: dict[Hashable, tuple[Any, int]] = {}  # key -> (ref, worker that computes it)
        self.stopping = False

    def idle_workers(self) -> list[int]:
        return [w for w in self.pool._actors if w not in self.busy]

    def submit(self, i: int, wid: int) -> None:
        actor = self.pool._actors[wid]
        args = [self.items[i]]
        if self.shared is not None:
            key, setup, setup_args = self.shared(i)
            if key not in self.shared_refs:
                self.shared_refs[key] = (actor.call.remote(_run_setup, (setup, setup_args)), wid)
            args.append(self.shared_refs[key][0])
        self.attempts[i] += 1
        self.tried_on[i].add(wid)
        self.inflight[actor.call.remote(self.fn, *args)] = (i, wid)
        self.busy.add(wid)

    def dispatch(self) -> None:
        for wid in self.idle_workers():
            if self.retry_queue:
                # A retry goes to an actor it has not failed on, if one is idle.
                i = next((j for j in self.retry_queue if wid not in self.tried_on[j]), self.retry_queue[0])
                self.retry_queue.remove(i)
            elif self.queue and not self.stopping and self.stop is not None and self.stop():
                self.stopping = True
                continue
            elif self.queue and not self.stopping:
                i = self.queue.popleft()
            else:
                continue
            self.submit(i, wid)

    def actor_died(self, wid: int) -> None:
        pool = self.pool
        pool._actors.pop(wid, None)
        self.busy.discard(wid)
        for key in [k for k, (_, w) in self.shared_refs.items() if w == wid]:
            del self.shared_refs[key]
        # Keep the pool at strength, within reason: a function that kills every actor must end.
        if pool._replacements < 2 * pool.workers:
            pool._replacements += 1
            new = pool._start_actor()
            log.warning("a Ray worker died; started worker %d in its place", new)
        elif not pool._actors:
            raise WorkbenchError("every Ray worker died; the items not done are reported as errors")

    def forget_failed_setup(self, i: int) -> None:
        # Item i failed: if its shared setup failed too, the retry must do the setup again.
        if self.shared is not None:
            key = self.shared(i)[0]
            if key in self.shared_refs and _failed(self.pool._ray, self.shared_refs[key][0]):
                del self.shared_refs[key]

    def completions(self):
        """Yields each item's index as it ends (done, or failed past its retries)."""
        ray = self.pool._ray
        while True:
            self.dispatch()
            if not self.inflight:
                return
            ready, _ = ray.wait(list(self.inflight), num_returns=1)
            ref = ready[0]
            i, wid = self.inflight.pop(ref)
            self.busy.discard(wid)
            try:
                value = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                self.errors[i] = _describe(exc)
                # The error may be a dependency's (the actor computing the shared setup died):
                # only an actor that does not answer is dead.
                if not _alive(ray, self.pool._actors.get(wid)):
                    self.actor_died(wid)
                self.forget_failed_setup(i)
            except ray.exceptions.RayTaskError as exc:
                self.errors[i] = _describe(exc)
                self.forget_failed_setup(i)
            else:
                self.results[i] = Outcome(i, value, attempts=self.attempts[i])
                yield i
                continue
            if self.attempts[i] <= self.retries:
                log.warning("item %d failed on worker %d (%s); trying it again", i, wid, self.errors[i])
                self.retry_queue.append(i)
            else:
                self.results[i] = Outcome(i, error=f"failed {self.attempts[i]} times; last: {self.errors[i]}",
                                          attempts=self.attempts[i])
                yield i


class PoolInterrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`Pool.map`; ``results`` holds the items finished before it (others ``None``)."""

    def __init__(self, results: list[Outcome | None]) -> None:
        super().__init__(f"interrupted after {sum(r is not None for r in results)} items")
        self.results = results


def _alive(ray, actor) -> bool:
    if actor is None:
        return False
    try:
        ray.get(actor.ready.remote(), timeout=60)
    except Exception:
        return False
    return True


def _run_setup(model, job):
    setup, args = job
    return setup(model, *args)


def _failed(ray, ref) -> bool:
    ready, _ = ray.wait([ref], timeout=0)
    if not ready:
        return False
    try:
        ray.get(ref)
    except Exception:
        return True
    return False


#: Ray's settings for a local Ray started here. Ray runs its workers at niceness 15 by default;
#: here the actors do the run's work, so beside any other busy process on the machine (another
#: test worker, a background run) they were starved: starting two actors holding the tiny test
#: model took 120 s instead of 15 s on 2 cores beside two busy processes.
LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0}


def _object_store_bytes() -> int:
    """A small object store: the pool moves scores and statistics, not activations."""
    return 512 * 2**20


class _Borrowed:
    """A caller's pool used as a context manager without closing it."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def __enter__(self) -> Pool:
        return self.pool

    def __exit__(self, *exc) -> None:
        pass


def pool_for(model, workers: int | str | Pool, *, address: str | None = None,
             files: dict[str, bytes] | None = None):
    """A context manager giving a :class:`Pool` for ``model``: the caller's own (left running,
    so that several runs share warm workers), or one started for the run and stopped after it.

    Example:
        >>> with Pool(model, 2) as pool:                                   # doctest: +SKIP
        ...     a = wb.evaluate(model, facts, method="rome", workers=pool)
        ...     b = wb.evaluate(model, facts, method="memit", workers=pool)

    Raises:
        WorkbenchError: the pool's workers hold other weights than ``model``.
    """
    if isinstance(workers, Pool):
        if workers.fingerprint != model.fingerprint:
            raise WorkbenchError(f"the pool's workers hold weights {workers.fingerprint}, this model's are "
                                 f"{model.fingerprint}: start a Pool for this model")
        if files:
            workers.add_files(files)
        return _Borrowed(workers)
    return Pool(model, workers, address=address, files=files)
