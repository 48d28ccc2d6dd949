"""A journal of target searches: a long sequential run that can be carried to another machine.

The v* search is almost all of a weight edit's time (MEMIT in batches of 100: about 10 s a
fact on one CPU thread), and everything else an edit computes (keys, the solve) is cheap and
follows from the search's δs and the weights. A checkpoint keeps the weights, tens of
megabytes that stay on the machine that made them; a journal keeps only each search's result,
about 10 KB a fact (its δ and the activation it started from), small enough to commit beside
the run's report. Rerun the same command with the same journal on any machine and every search
it already holds is read instead of run: the edits are replayed without searching and the run
goes on from where the journal ends.

A search is found by what it depends on: the fact, the sites, the prefixes and the search
settings, and the model's edit history (each applied weight edit's method, layers and facts, in
order; memories in the forward pass by their number). On the machine that wrote the journal a
replay is bitwise the original run; on another CPU the replayed weights differ by float
rounding, as a run made there would.

Example:
    >>> with search_journal(model, "run.safetensors", identity={"run": "memit_b100"}):  # doctest: +SKIP
    ...     evaluate(model, facts, method="memit", mode="sequential", batch_size=100)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from workbench.core.model import Model
from workbench.errors import WorkbenchError
from workbench.facts import Fact

FORMAT = 1
#: Seconds between saves while a run adds searches (an interrupted run loses at most this much).
SAVE_EVERY = 120.0


class Journal:
    """Search results by key, read from and written to one safetensors file."""

    def __init__(self, path: str | Path, identity: dict) -> None:
        self.path = Path(path)
        self.identity = json.loads(json.dumps(identity, sort_keys=True, default=str))
        self.entries: dict[str, dict] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.added = 0
        self._saved_at = time.monotonic()
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("journal", "null"))
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 - any damage reads as one clear error
            raise WorkbenchError(f"the search journal {self.path} cannot be read ({exc}); "
                                 "move it away to start the run's searches over") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("entries"), dict):
            raise WorkbenchError(f"{self.path} is not a search journal of format {FORMAT}")
        if meta.get("identity") != self.identity:
            theirs = meta.get("identity") or {}
            differ = sorted(k for k in set(theirs) | set(self.identity) if theirs.get(k) != self.identity.get(k))
            raise WorkbenchError(f"the search journal {self.path} belongs to another run ({', '.join(differ)} "
                                 "differ); name another file or move it away")
        missing = [k for e in meta["entries"].values() for k in e["tensors"] if k not in tensors]
        if missing:
            raise WorkbenchError(f"the search journal {self.path} is damaged: {len(missing)} tensors are missing")
        self.entries, self.tensors = meta["entries"], tensors

    def __len__(self) -> int:
        return len(self.entries)

    def take(self, key: str) -> dict | None:
        """The stored result for ``key`` as the fields of a
        :class:`~workbench.editing.targets.DeltaResult` (``DeltaResult(**fields)``), or None."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.hits += 1
        parts = {name: self.tensors[name] for name in entry["tensors"]}
        return dict(deltas={site: parts[f"{key}.delta.{site}"].clone() for site in entry["sites"]},
                    init={site: parts[f"{key}.init.{site}"].clone() for site in entry["sites"]},
                    losses=list(entry["losses"]), nll=entry["nll"], prob=entry["prob"], steps=entry["steps"])

    def put(self, key: str, result) -> None:
        """Record ``result`` (a :class:`~workbench.editing.targets.DeltaResult`) under ``key``."""
        names = []
        for site, value in result.deltas.items():
            self.tensors[f"{key}.delta.{site}"] = value.detach().cpu().contiguous().clone()
            names.append(f"{key}.delta.{site}")
        for site, value in result.init.items():
            self.tensors[f"{key}.init.{site}"] = value.detach().cpu().contiguous().clone()
            names.append(f"{key}.init.{site}")
        self.entries[key] = dict(sites=sorted(result.deltas), tensors=names, losses=[float(x) for x in result.losses],
                                 nll=float(result.nll), prob=float(result.prob), steps=int(result.steps))
        self.added += 1
        if time.monotonic() - self._saved_at > SAVE_EVERY:
            self.save()

    def save(self) -> None:
        """Write the file atomically (a crash mid-write leaves the previous one)."""
        from safetensors.torch import save as to_bytes

        from workbench.runtime.cache import write_file_atomically

        meta = dict(format=FORMAT, identity=self.identity, entries=self.entries)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(self.path, to_bytes(self.tensors, metadata={"journal": json.dumps(meta)}))
        self._saved_at = time.monotonic()


_JOURNALS: dict[int, Journal] = {}


def history(model: Model) -> list:
    """The model's edit history as a search depends on it: each weight edit's method, layers
    and facts in order, and how many memories sit in the forward pass."""
    stack = []
    for h in model.edit_stack:
        # A run resumed from a checkpoint holds its earlier batches as one edit; ``batches`` (start
        # and stop in its facts) gives them back, so that a resumed run looks up the searches an
        # unbroken one recorded, and records ones an unbroken replay will find.
        spans = (h.info or {}).get("batches") or [[0, len(h.facts)]]
        stack.extend([h.method, [int(x) for x in h.layers], h.facts[a:b]] for a, b in spans)
    return [stack, len(model.prompt_edits)]


def search_key(model: Model, fact: Fact, sites, prefixes, params, alone) -> str:
    """A digest of everything a search's result depends on (see the module's docstring)."""
    what = [history(model), [fact.subject, fact.prompt, fact.target_new], list(sites), list(prefixes),
            repr(params), list(alone)]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def active(model: Model) -> Journal | None:
    """The journal searches on ``model`` are read from and written to now, if any."""
    return _JOURNALS.get(id(model))


@contextlib.contextmanager
def search_journal(model: Model, path: str | Path, *, identity: dict) -> Iterator[Journal]:
    """While inside, every target search on ``model`` is looked up in the journal at ``path``
    first and recorded there when it is run; the file is written on leaving (also on an error or
    Ctrl-C) and every :data:`SAVE_EVERY` seconds meanwhile.

    ``identity`` says which run the journal belongs to (method, settings, facts); a journal
    written for another run is refused, naming what differs.

    Raises:
        WorkbenchError: the file is damaged or belongs to another run.
    """
    journal = Journal(path, identity)
    previous = _JOURNALS.get(id(model))
    _JOURNALS[id(model)] = journal
    try:
        yield journal
    finally:
        if previous is None:
            _JOURNALS.pop(id(model), None)
        else:
            _JOURNALS[id(model)] = previous
        if journal.added:
            journal.save()
