"""Edits as handles that know how to undo themselves exactly.

Every edit, whatever the method, ends in :func:`commit_weights` (methods that
change weights) or :func:`commit_prompt_edit` (in-context, retrieval). The
handle keeps bitwise copies of every parameter it changed, before and after,
so :meth:`EditHandle.revert` restores the weights bit for bit.

Edits stack on a per-model list. Reverting the newest edit is always exact.
Reverting an older one is allowed only when no later edit touched the same
parameters (then it is exact too); otherwise it is refused with the reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import contextmanager
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workbench.runtime.cache import write_file_atomically
from workbench.runtime import jsonfiles
from workbench.runtime.jsonfiles import read_text_bounded
from workbench.errors import WorkbenchError
from workbench.core.model import Model
from workbench.results import Result


#: Saved edits keep a method's memory tensors beside the weights under this name prefix.
MEMORY_PREFIX = "memory::"


def _stack(model: Model) -> list[EditHandle]:
    # Stored on the Model object itself so every caller sees the same history.
    if not hasattr(model, "edit_stack"):  # a stand-in model (tests, remote views)
        object.__setattr__(model, "edit_stack", [])
    return model.edit_stack


def _params(model: Model) -> dict[str, torch.nn.Parameter]:
    return dict(model.hf_model.named_parameters(remove_duplicate=False))


def tensor_hash(t: Tensor) -> str:
    # Raw bytes (the same as numpy's for every dtype numpy has): bfloat16 hashes too.
    raw = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8)
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()[:16]


# eq=False: two handles are the same edit only if they are the same object. Two edits
# loaded from one file hold equal fields, and reverting one must not remove the other.
@dataclass(eq=False)
class EditHandle(Result):
    """One applied edit.

    Attributes:
        method: the editing method's name (``"rome"``, ``"in-context"``, ...).
        layers: the layers whose weights changed (empty for no-weight edits).
        facts: the facts edited (as dicts).
        seconds: wall time of computing and applying the edit.
        before / after: bitwise copies of every changed parameter, by name.
        prompt_edit: for no-weight edits, the object with ``rewrite(prompt)``.
        info: method-specific diagnostics (losses, norms, ...).

    Example:
        >>> with wb.edit(model, fact, method="rome") as h:   # doctest: +SKIP
        ...     wb.probe(model, fact.text, targets=[fact.target_new])
        >>> # weights are back, bitwise, here
    """

    method: str
    layers: list[int]
    facts: list[dict]
    seconds: float
    before: dict[str, Tensor] = field(default_factory=dict, repr=False)
    after: dict[str, Tensor] = field(default_factory=dict, repr=False)
    prompt_edit: Any = field(default=None, repr=False)
    info: dict = field(default_factory=dict)
    model: Any = field(default=None, repr=False)
    active: bool = True
    #: Tensors a method keeps with its edit for later edits to read (AlphaEdit's keys):
    #: model state that lives and dies with the handle, saved and loaded with it.
    memory: dict[str, Tensor] = field(default_factory=dict, repr=False)

    # -- summaries ----------------------------------------------------------------
    @property
    def changes_weights(self) -> bool:
        return bool(self.after)

    def delta_norms(self) -> dict[str, float]:
        """Frobenius norm of each parameter's change."""
        return {k: float((self.after[k].double() - self.before[k].double()).norm()) for k in self.after}

    def to_dict(self) -> dict:
        return {
            "method": self.method, "layers": list(self.layers), "facts": self.facts,
            "seconds": self.seconds, "delta_norms": self.delta_norms(), "info": self.info,
            "active": self.active,
        }

    def touched(self, top_k: int = 10, **kwargs):
        """The corpus texts this edit changes most, and its KL there against random texts.

        See :func:`workbench.editing.touched.touched` (the ranking uses the weights as they
        were before the edit and the update alone; the KL compares before with after).

        Example:
            >>> wb.edit(model, fact, method="rome").touched(top_k=5).top[0]["snippet"]  # doctest: +SKIP
        """
        from workbench.editing.touched import touched

        return touched(self, top_k=top_k, **kwargs)

    # -- undo -----------------------------------------------------------------------
    def revert(self) -> None:
        """Undo this edit exactly, or raise if a later edit makes that impossible."""
        if not self.active:
            return
        stack = _stack(self.model)
        clash = self.later_clash()
        if clash is not None:
            names = sorted(set(clash.after) & set(self.after))
            raise WorkbenchError(
                f"cannot revert this {self.method} edit exactly: a later {clash.method} edit "
                f"changed the same weights ({names[0]}); revert the later edit first or use revert_all"
            )
        params = _params(self.model)
        with torch.no_grad():
            for name, value in self.before.items():
                params[name].copy_(value)
        if self.prompt_edit is not None:
            # By identity: two in-context edits of the same fact compare equal.
            kept = [e for e in self.model.prompt_edits if e is not self.prompt_edit]
            self.model.prompt_edits[:] = kept
            if hasattr(self.prompt_edit, "detach"):
                self.prompt_edit.detach()  # an in-forward memory (GRACE, WISE) takes its hook off
        if self in stack:
            stack.remove(self)
        self.active = False

    def later_clash(self) -> EditHandle | None:
        """The first later active edit that changed some of the same weights, if any."""
        stack = _stack(self.model)
        later = stack[stack.index(self) + 1 :] if self in stack else []
        return next((h for h in later if set(h.after) & set(self.after)), None)

    @contextmanager
    def weights_before(self):
        """Inside, the changed weights are as they were before this edit; after, as edited (bitwise).

        For reading the unedited model without reverting (``touched`` compares the two).
        """
        params = _params(self.model)
        try:
            with torch.no_grad():
                for name, value in self.before.items():
                    params[name].copy_(value)
            yield
        finally:
            with torch.no_grad():
                for name, value in self.after.items():
                    params[name].copy_(value)

    def __enter__(self) -> EditHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.revert()

    # -- persistence ----------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save as ``path`` (safetensors of the edited weights) + ``path.json`` (metadata).

        ``.safetensors`` is appended to a path that does not end in it (``notes.txt``
        becomes ``notes.txt.safetensors``: no other file is touched). Both files are
        written to temporary names and renamed into place, the weights last, so a
        failure leaves no half-written or orphaned file.

        Raises:
            WorkbenchError: the edit is reverted, a file is already there (and
                ``overwrite`` is False), or its prompt edit cannot be saved.

        Example:
            >>> h.save("eiffel-rome")                 # doctest: +SKIP
            PosixPath('eiffel-rome.safetensors')
        """
        from safetensors.torch import save

        if not self.active:
            raise WorkbenchError("this edit was reverted; a saved copy would re-apply it when loaded")
        path = edit_path(path)
        meta_path = Path(str(path) + ".json")
        existing = [str(p) for p in (path, meta_path) if p.exists()]
        if existing and not overwrite:
            raise WorkbenchError(f"{existing[0]!r} already exists; choose another path or pass overwrite=True")
        if self.prompt_edit is not None and not hasattr(self.prompt_edit, "to_dict"):
            raise WorkbenchError(f"{self.method} edits cannot be saved")
        meta = {
            "format": "workbench-edit/1",
            "model": self.model.name,
            "fingerprint": self.model.fingerprint,
            "method": self.method,
            "layers": list(self.layers),
            "facts": self.facts,
            "seconds": self.seconds,
            "info": self.info,
            "before_hashes": {k: tensor_hash(v) for k, v in self.before.items()},
            "memory_hashes": {k: tensor_hash(v) for k, v in self.memory.items()},
            "prompt_edit": self.prompt_edit.to_dict() if self.prompt_edit is not None else None,
        }
        tensors = {k: v.contiguous().cpu() for k, v in self.after.items()}
        tensors.update({MEMORY_PREFIX + k: v.contiguous().cpu() for k, v in self.memory.items()})
        weights = save(tensors)
        # Metadata first: a crash between the two renames leaves a .json without weights,
        # which load_edit refuses, never weights that look loadable without their checks.
        write_file_atomically(meta_path, json.dumps(meta, indent=1).encode())
        try:
            write_file_atomically(path, weights)
        except BaseException:
            meta_path.unlink(missing_ok=True)
            raise
        return path


def edit_path(path: str | Path) -> Path:
    """Where an edit is saved: ``path`` with ``.safetensors`` appended unless it ends in it."""
    path = Path(path)
    return path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")


def commit_weights(
    model: Model,
    method: str,
    layers: list[int],
    facts: list[dict],
    compute: Callable[[], dict[str, Tensor]],
    *,
    info: dict | None = None,
    memory: dict[str, Tensor] | None = None,
) -> EditHandle:
    """Run ``compute()`` (returns new values for named parameters) and apply it atomically.

    ``compute`` may read and temporarily hook the model but must not leave weights
    changed; whatever happens (an exception, a NaN, Ctrl-C) the weights are either
    all new or all as before. ``memory`` (filled by ``compute``, if at all) becomes the
    handle's :attr:`~EditHandle.memory`: it exists exactly while the edit is applied.
    """
    start = time.perf_counter()
    params = _params(model)
    # compute() only reads the model; nothing below writes a weight until every value is checked.
    new_values = compute()
    for name, value in new_values.items():
        if name not in params:
            raise WorkbenchError(f"edit names unknown parameter {name!r}")
        if value.shape != params[name].shape:
            raise WorkbenchError(f"edit of {name} has shape {tuple(value.shape)}, expected {tuple(params[name].shape)}")
    before = {n: params[n].detach().clone() for n in new_values}
    after = {n: v.detach().to(device=params[n].device, dtype=params[n].dtype).clone() for n, v in new_values.items()}
    for name, value in after.items():
        # Checked after the cast: a float64 update can be finite yet overflow the weight dtype.
        if not torch.isfinite(value).all():
            raise WorkbenchError(f"{method} produced NaN or inf weights for {name}; the edit was aborted and nothing changed")
    # Built before any weight is written: a malformed argument fails here, with nothing changed.
    handle = EditHandle(
        method=method, layers=sorted(set(layers)), facts=facts,
        seconds=0.0, before=before, after=after,
        info=info or {}, model=model,
        memory={k: v.detach().cpu().clone() for k, v in (memory or {}).items()},
    )
    stack = _stack(model)
    try:
        with torch.no_grad():
            for name, value in after.items():
                params[name].copy_(value)
        stack.append(handle)
    except BaseException:
        # Ctrl-C between two copies, or a failure before the edit is on the stack (where
        # no revert could find it): put every parameter back, so none is left edited.
        with torch.no_grad():
            for name, value in before.items():
                params[name].copy_(value)
        raise
    handle.seconds = time.perf_counter() - start
    return handle


def commit_prompt_edit(model: Model, method: str, facts: list[dict], prompt_edit, *, info: dict | None = None,
                       seconds: float = 0.0, layers: list[int] | None = None) -> EditHandle:
    """Activate a no-weight edit (an object with ``rewrite(prompt)``; ``attach(model)`` too if it hooks the forward pass)."""
    # layers: where an in-forward memory acts (GRACE, WISE); no weight there changes.
    # The handle comes first: a malformed argument must fail before the edit acts.
    handle = EditHandle(method=method, layers=list(layers or []), facts=facts, seconds=seconds,
                        prompt_edit=prompt_edit, info=info or {}, model=model)
    stack = _stack(model)
    model.prompt_edits.append(prompt_edit)
    try:
        if hasattr(prompt_edit, "attach"):
            prompt_edit.attach(model)
        stack.append(handle)
    except BaseException:
        # By identity: an equal edit applied earlier must stay.
        model.prompt_edits[:] = [e for e in model.prompt_edits if e is not prompt_edit]
        if hasattr(prompt_edit, "detach"):
            prompt_edit.detach()
        raise
    return handle


def active_edits(model: Model) -> list[EditHandle]:
    """The model's applied edits, oldest first."""
    return list(_stack(model))


@contextmanager
def unedited(model: Model):
    """Inside, ``model`` runs as if no edit were applied; after, every edit is back, bitwise.

    For measuring "before" while edits stay applied: changed weights take their values
    from before the oldest edit, no-weight edits (in-context text, retrieval, GRACE and
    WISE memories) step aside. Nothing is reverted: the edit stack is untouched.

    Example:
        >>> with wb.edit(model, fact, method="rome"):         # doctest: +SKIP
        ...     with unedited(model):
        ...         wb.probe(model, fact.text, targets=[fact.target_true])  # the unedited answer
    """
    stack = _stack(model)
    params = _params(model)
    # The oldest edit's `before` of each parameter is its unedited value.
    original: dict[str, Tensor] = {}
    for handle in stack:
        for name, value in handle.before.items():
            original.setdefault(name, value)
    current = {name: params[name].detach().clone() for name in original}
    prompt_edits = list(getattr(model, "prompt_edits", []))
    hooked = [e for e in prompt_edits if hasattr(e, "detach") and getattr(e, "_hook", None) is not None]
    try:
        with torch.no_grad():
            for name, value in original.items():
                params[name].copy_(value)
        for e in hooked:
            e.detach()
        if prompt_edits:
            model.prompt_edits[:] = []
        yield model
    finally:
        with torch.no_grad():
            for name, value in current.items():
                params[name].copy_(value)
        if prompt_edits:
            model.prompt_edits[:] = prompt_edits
        for e in hooked:
            e.attach(model)


def revert_all(model: Model) -> int:
    """Revert every edit, newest first; the weights come back bitwise. Returns how many."""
    stack = _stack(model)
    n = len(stack)
    for handle in reversed(list(stack)):
        handle.revert()
    return n


def load_edit(model: Model, path: str | Path, *, prompt_edit_loader: Callable[[dict], Any] | None = None) -> EditHandle:
    """Re-apply an edit saved with :meth:`EditHandle.save`.

    The whole file is checked before anything is applied: its metadata (keys and
    types), its tensors (names, dtypes and shapes against the model, memory tensors
    against their saved hashes), and that the weights it changes are, right now, what
    they were when it was made. Anything wrong is one :class:`WorkbenchError` line.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = edit_path(path)
    meta_path = Path(str(path) + ".json")
    if not meta_path.is_file():
        raise WorkbenchError(f"cannot read edit metadata {str(meta_path)!r}")
    try:
        # Metadata is small: a megabyte bounds a hostile file well above any real one.
        text = read_text_bounded(meta_path, "edit metadata", max_bytes=2**20)
        meta = jsonfiles.loads(text, f"edit metadata {str(meta_path)!r}")
    except (json.JSONDecodeError, jsonfiles.NotText):
        raise WorkbenchError(f"edit metadata {str(meta_path)!r} is corrupt (not JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != "workbench-edit/1":
        raise WorkbenchError(f"{str(meta_path)!r} is not a workbench edit file")
    if "fingerprint" in meta and meta["fingerprint"] != model.fingerprint:
        raise WorkbenchError(
            f"this edit was made for model {meta.get('model')!r} (fingerprint {meta.get('fingerprint')}), "
            f"not for the loaded {model.name!r} ({model.fingerprint})"
        )
    problem = _metadata_problem(meta, model)
    if problem is not None:
        raise WorkbenchError(f"edit file {str(path)!r} is corrupt: {problem}")
    try:
        after = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise WorkbenchError(f"edit weights {str(path)!r} are unreadable or corrupt ({exc})") from None
    memory = {k[len(MEMORY_PREFIX):]: after.pop(k) for k in [k for k in after if k.startswith(MEMORY_PREFIX)]}
    params = _params(model)
    problem = _tensor_problem(meta, after, memory, params)
    if problem is not None:
        raise WorkbenchError(f"edit file {str(path)!r} is corrupt: {problem}")
    for name, want in meta["before_hashes"].items():
        if tensor_hash(params[name]) != want:
            raise WorkbenchError(
                f"the model's {name} is not what it was when this edit was made "
                "(another edit is applied?); revert other edits first"
            )
    facts, info = meta.get("facts", []), meta.get("info", {})
    saved = meta.get("prompt_edit")
    if saved is None:
        return commit_weights(model, meta["method"], meta["layers"], facts, lambda: dict(after),
                              info=info, memory=memory)
    kind = saved["kind"]
    if prompt_edit_loader is None:
        from workbench.editing.overlays import LOADERS

        if kind not in LOADERS:
            raise WorkbenchError(f"{meta['method']} edits cannot be loaded without their loader")
        prompt_edit_loader = lambda d: LOADERS[kind](d, model)  # noqa: E731
    try:
        prompt_edit = prompt_edit_loader(saved)
    except WorkbenchError:
        raise  # already one line (a missing package, a damaged memory), and nothing was applied
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise WorkbenchError(
            f"edit file {str(path)!r} is corrupt: its {kind} edit cannot be rebuilt ({type(exc).__name__}: {exc})"
        ) from None
    return commit_prompt_edit(model, meta["method"], facts, prompt_edit, info=info, layers=meta["layers"])


#: The metadata keys :meth:`EditHandle.save` writes: these must be there ...
_REQUIRED_META = ("format", "fingerprint", "method", "layers", "before_hashes")
#: ... these may be (files from before ``memory_hashes`` have none).
_OPTIONAL_META = ("model", "facts", "seconds", "info", "memory_hashes", "prompt_edit")


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_whole(value) or isinstance(value, float)) and math.isfinite(value)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def _is_hashes(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(h, str) for h in value.values())


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: Each metadata key's check, and what it must be (for the message).
_META_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model": (_is_text, "a model name"),
    "method": (lambda v: isinstance(v, str) and bool(v), "a method name"),
    "facts": (lambda v: isinstance(v, list) and all(isinstance(f, dict) for f in v), "a list of facts"),
    "seconds": (lambda v: _is_number(v) and v >= 0, "a number of seconds"),
    "info": (lambda v: isinstance(v, dict), "a dict"),
    "before_hashes": (_is_hashes, "weight names and hashes"),
    "memory_hashes": (_is_hashes, "memory names and hashes"),
    "prompt_edit": (lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("kind"), str)),
                    "null or a saved no-weight edit with its 'kind'"),
}

#: The fields of the built-in no-weight edits whose loaders do not check them:
#: kind -> field -> (required, check, what it must be). GRACE and WISE check their own.
_PROMPT_EDIT_FIELDS: dict[str, dict[str, tuple[bool, Callable[[Any], bool], str]]] = {
    "in-context": {"statements": (True, _is_texts, "a list of texts"),
                   "demonstrations": (False, _is_whole, "a whole number"),
                   "template": (False, _is_text, "a text")},
    "retrieval": {"keys": (True, _is_texts, "a list of texts"),
                  "statements": (True, _is_texts, "a list of texts"),
                  "threshold": (False, _is_number, "a number"),
                  "template": (False, _is_text, "a text"),
                  "subjects": (False, lambda v: isinstance(v, list) and all(x is None or isinstance(x, str) for x in v),
                               "a list of texts or nulls"),
                  "top_k": (False, lambda v: _is_whole(v) and v >= 1, "a whole number from 1"),
                  "mention": (False, lambda v: isinstance(v, bool), "true or false"),
                  "hops": (False, lambda v: _is_whole(v) and 1 <= v <= 4, "a whole number from 1 to 4")},
}


def _metadata_problem(meta: dict, model: Model) -> str | None:
    """What is wrong with a saved edit's metadata, or None."""
    for key in _REQUIRED_META:
        if key not in meta:
            return f"its metadata has no {key!r}"
    unknown = sorted(set(meta) - set(_REQUIRED_META) - set(_OPTIONAL_META))
    if unknown:
        return f"its metadata has an unknown key {unknown[0]!r}"
    layers = meta["layers"]
    if not isinstance(layers, list) or not all(_is_whole(l) and 0 <= l < model.n_layers for l in layers):
        return f"'layers' must be a list of layer numbers 0..{model.n_layers - 1}, not {_short(layers)}"
    for key, (ok, what) in _META_CHECKS.items():
        if key in meta and not ok(meta[key]):
            return f"{key!r} must be {what}, not {_short(meta[key])}"
    saved = meta.get("prompt_edit")
    if saved is None:
        return None
    kind = saved["kind"]
    for name, (required, ok, what) in _PROMPT_EDIT_FIELDS.get(kind, {}).items():
        if name not in saved:
            if required:
                return f"its {kind} edit has no {name!r}"
        elif not ok(saved[name]):
            return f"its {kind} edit's {name!r} must be {what}, not {_short(saved[name])}"
    if kind == "retrieval" and len(saved["keys"]) != len(saved["statements"]):
        return f"its retrieval edit has {len(saved['keys'])} keys but {len(saved['statements'])} statements"
    if kind == "retrieval" and "subjects" in saved and len(saved["subjects"]) != len(saved["keys"]):
        return f"its retrieval edit has {len(saved['keys'])} keys but {len(saved['subjects'])} subjects"
    return None


def _tensor_problem(meta: dict, after: dict[str, Tensor], memory: dict[str, Tensor],
                    params: dict[str, torch.nn.Parameter]) -> str | None:
    """What is wrong with a saved edit's tensors, given its (checked) metadata, or None."""
    hashes = meta["before_hashes"]
    if set(hashes) != set(after):
        # Every weight applied must be one the metadata vouches for, with the hash of what it replaces.
        odd = sorted(set(after) ^ set(hashes))
        return "its weights and its metadata's before_hashes disagree" + (f" ({odd[0]})" if odd else "")
    listed = meta.get("memory_hashes", {})
    for name in sorted(set(memory) ^ set(listed)):
        if name in memory:
            return f"it holds a memory tensor {MEMORY_PREFIX + name!r} that its metadata does not list"
        return f"its metadata lists a memory tensor {MEMORY_PREFIX + name!r} that it does not hold"
    for name, value in memory.items():
        if tensor_hash(value) != listed[name]:
            return f"its memory tensor {MEMORY_PREFIX + name!r} is not what was saved"
    if meta.get("prompt_edit") is None and not after:
        return "it holds no weights and no prompt edit"
    if meta.get("prompt_edit") is not None and after:
        return "it holds both weights and a no-weight edit"
    for name, value in after.items():
        if name not in params:
            return f"it changes {name}, which the loaded model does not have"
        if value.dtype != params[name].dtype:
            # A cast would hide the tampering (or the rounding) that made the dtype change.
            return f"{name} is stored as {value.dtype}, the model's weight is {params[name].dtype}"
        if value.shape != params[name].shape:
            return f"{name} has shape {tuple(value.shape)}, the model's {tuple(params[name].shape)}"
    return None
