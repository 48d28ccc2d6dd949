"""Sequential runs that survive a stop: the state after each curve point, kept on disk.

A run of a thousand sequential edits takes hours on a CPU. With ``checkpoint=DIR``,
:func:`~workbench.evaluation.sequential.run_sequential` writes, after every curve
point, the weights as the edits so far left them (only the parameters they changed),
the keys the method keeps for later edits (AlphaEdit's, MEMIT + kept keys'), the rows
and the curve. A later call with the same settings, facts and model loads it, applies
it as one edit, and goes on from the next batch: the curve it ends with is the one an
unbroken run would have drawn, because each batch sees the same weights and kept keys.

The memories inside the forward pass (GRACE, WISE) are kept too, each edit as it saves
itself (``to_dict``, or ``to_state`` with tensors where an edit file cannot hold it); the
baselines that only rewrite the prompt are fast enough to run again.

Example:
    >>> report = evaluate(model, facts, method="memit", mode="sequential", batch_size=100,
    ...                   every=100, checkpoint="runs/memit")          # doctest: +SKIP
    >>> # stopped (time limit, SIGTERM, crash); the same call goes on from the last point
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from workbench.errors import WorkbenchError
from workbench.evaluation.report import CurvePoint, FactRow
from workbench.runtime.cache import write_file_atomically

if TYPE_CHECKING:
    from workbench.evaluation.run import Run

FORMAT = "workbench-sequential-checkpoint/1"
#: Settings that may differ between the parts of one run (they do not shape its numbers).
VOLATILE = ("time_limit", "stop_after", "resumed", "workers", "device", "revert")


@dataclass
class Restored:
    """What a checkpoint gives back: the facts reached (edited or failed), those done (in edit
    order), their rows, the curve, the last diagnostics and the edit time spent before it."""

    reached: int
    done: list[int]
    rows: list[FactRow]
    curve: list[CurvePoint]
    diagnostics: dict | None
    edit_seconds: float


def facts_digest(run: Run) -> str:
    """A hash of the selected facts, in order: a checkpoint belongs to one selection."""
    text = json.dumps([f.to_dict() for f in run.facts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _identity(run: Run) -> dict:
    settings = {k: v for k, v in run.record.items() if k not in VOLATILE}
    return dict(method=run.settings.method, model=run.model.name, fingerprint=run.model.fingerprint,
                facts=facts_digest(run), settings=json.loads(json.dumps(settings, default=str)))


def _paths(directory: Path) -> tuple[Path, Path]:
    return directory / "state.json", directory / "state.safetensors"


def _state_tensors(run: Run) -> dict[str, torch.Tensor]:
    """The parameters the run's edits changed, as they are now, and each kept-memory key
    concatenated over the edits in order (as :func:`~workbench.editing.alphaedit.kept_keys` reads them)."""
    params = dict(run.model.hf_model.named_parameters())
    changed = sorted({name for h in run.handles if h.active for name in h.after})
    tensors = {f"param.{name}": params[name].detach().cpu().contiguous().clone() for name in changed}
    memory: dict[str, list[torch.Tensor]] = {}
    for h in run.handles:
        if h.active:
            for key, value in h.memory.items():
                memory.setdefault(key, []).append(value)
    for key, parts in memory.items():
        tensors[f"memory.{key}"] = torch.cat(parts, dim=1).contiguous()
    return tensors


def _overlay_state(run: Run) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Each no-weight edit of the run, in order: its handle's record and its memory's state
    (``to_state`` where the memory has one: tensors kept beside the JSON; else ``to_dict``)."""
    records, tensors = [], {}
    for i, h in enumerate(x for x in run.handles if x.active and x.prompt_edit is not None):
        edit = h.prompt_edit
        record = dict(method=h.method, facts=h.facts, layers=list(h.layers), info=h.info)
        if hasattr(edit, "to_state"):
            meta, parts = edit.to_state()
            record["state"] = meta
            tensors.update({f"edit.{i}.{k}": v.detach().cpu().contiguous() for k, v in parts.items()})
        elif hasattr(edit, "to_dict"):
            record["saved"] = edit.to_dict()
        else:
            raise WorkbenchError(f"{h.method} edits cannot be kept in a checkpoint (nothing saves them)")
        records.append(record)
    return records, tensors


def save(directory: str | Path, run: Run, *, reached: int, done: list[int], rows: list[FactRow], curve: list[CurvePoint],
         diagnostics: dict | None) -> None:
    """Write the run's state after its last curve point (the weights last: a crash between the
    two writes leaves a JSON whose hash the old weights do not match, which :func:`load` refuses)."""
    from safetensors.torch import save as to_bytes

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta_path, weights_path = _paths(directory)
    overlays, overlay_tensors = _overlay_state(run)
    weights = to_bytes({**_state_tensors(run), **overlay_tensors})
    meta = dict(format=FORMAT, **_identity(run), reached=int(reached), done=list(done), overlays=overlays,
                rows=[r.to_dict() for r in rows],
                curve=[p.to_dict() for p in curve], diagnostics=diagnostics,
                edit_seconds=float(sum(run.edit_seconds)),
                weights_sha256=hashlib.sha256(weights).hexdigest(),
                layers=sorted({layer for h in run.handles if h.active for layer in h.layers}))
    write_file_atomically(meta_path, json.dumps(meta).encode())
    write_file_atomically(weights_path, weights)


@dataclass
class Saved:
    """A checkpoint read and checked against its run, not yet applied."""

    meta: dict
    tensors: dict[str, torch.Tensor]


def read(directory: str | Path, run: Run) -> Saved | None:
    """The checkpoint in ``directory``, checked against ``run`` (None when there is none yet).
    Read before the run's first pass, so that a wrong folder fails before hours of work.

    Raises:
        WorkbenchError: the checkpoint belongs to another run (the differing field named)
            or is damaged.
    """
    from safetensors.torch import load as from_bytes

    meta_path, weights_path = _paths(Path(directory))
    if not meta_path.exists():
        return None
    where = f"checkpoint {str(directory)!r}"
    try:
        meta = json.loads(meta_path.read_text())
        weights = weights_path.read_bytes()
    except (OSError, ValueError) as exc:
        raise WorkbenchError(f"{where} is unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise WorkbenchError(f"{where} is not a sequential-run checkpoint")
    if hashlib.sha256(weights).hexdigest() != meta.get("weights_sha256"):
        raise WorkbenchError(f"{where} is damaged: its weights do not match its record (a write was cut short?)")
    mine = _identity(run)
    for key in ("method", "model", "fingerprint", "facts"):
        if meta.get(key) != mine[key]:
            raise WorkbenchError(f"{where} is from another run: its {key} is {meta.get(key)!r}, this run's {mine[key]!r}")
    theirs = meta.get("settings", {})
    for key in sorted(set(theirs) | set(mine["settings"])):
        if theirs.get(key) != mine["settings"].get(key):
            raise WorkbenchError(f"{where} is from another run: its {key} is {theirs.get(key)!r}, "
                                 f"this run's {mine['settings'].get(key)!r}")
    return Saved(meta=meta, tensors=from_bytes(weights))


def apply(saved: Saved, run: Run) -> Restored:
    """Apply a checkpoint :func:`read` gave to the unedited model as one edit (kept in
    ``run.handles``) and return what it held.

    Raises:
        WorkbenchError: an edit is already applied to the model.
    """
    from workbench.editing.handle import active_edits, commit_prompt_edit, commit_weights

    if active_edits(run.model):
        raise WorkbenchError("cannot resume from a checkpoint: revert the edits applied to the model first")
    meta, tensors = saved.meta, saved.tensors
    values = {k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")}
    memory = {k[len("memory."):]: v for k, v in tensors.items() if k.startswith("memory.")}
    done = [int(i) for i in meta["done"]]
    try:
        if values:
            run.handles.append(commit_weights(
                run.model, run.settings.method, list(meta.get("layers", [])), [run.facts[i].to_dict() for i in done],
                lambda: values, memory=memory, info={"restored_from_checkpoint": True, "n_edits": len(done),
                                                     "batches": _batches(done, run.settings.batch_size)}))
        for i, record in enumerate(meta.get("overlays", [])):
            run.handles.append(commit_prompt_edit(run.model, record["method"], record["facts"],
                                                  _rebuilt(record, i, tensors, run), info=record.get("info"),
                                                  layers=record.get("layers")))
    except BaseException:
        run.revert()  # all or nothing: a failed load leaves the run at no edit
        raise
    rows = [FactRow(**r) for r in meta["rows"]]
    curve = [CurvePoint(**p) for p in meta["curve"]]
    return Restored(reached=int(meta["reached"]), done=done, rows=rows, curve=curve,
                    diagnostics=meta.get("diagnostics"), edit_seconds=float(meta.get("edit_seconds", 0.0)))

def _batches(done: list[int], batch_size: int) -> list[list[int]]:
    """Where each edit call's facts start and stop in ``done``: a sequential run edits the facts
    ``[b, b + batch_size)`` in one call (``b`` a multiple of ``batch_size``), and a failed call
    adds none of them.

    Example:
        >>> _batches([0, 1, 2, 3, 6, 7], 2)
        [[0, 2], [2, 4], [4, 6]]
    """
    spans: list[list[int]] = []
    for k, i in enumerate(done):
        if spans and done[spans[-1][0]] // batch_size == i // batch_size:
            spans[-1][1] = k + 1
        else:
            spans.append([k, k + 1])
    return spans


def _rebuilt(record: dict, index: int, tensors: dict[str, torch.Tensor], run: Run):
    """A no-weight edit from its checkpoint record (see :func:`_overlay_state`)."""
    from workbench.editing.overlays import LOADERS, STATE_LOADERS

    if "state" in record:
        kind = record["state"].get("kind")
        if kind not in STATE_LOADERS:
            raise WorkbenchError(f"the checkpoint holds {kind!r} edits, which nothing here rebuilds")
        prefix = f"edit.{index}."
        parts = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        return STATE_LOADERS[kind](record["state"], parts, run.model)
    kind = record["saved"].get("kind")
    if kind not in LOADERS:
        raise WorkbenchError(f"the checkpoint holds {kind!r} edits, which nothing here rebuilds")
    return LOADERS[kind](record["saved"], run.model)
