"""Overlays: edits held inside the forward pass (GRACE, WISE), a hook on one FFN, no weight written.

The in-context and retrieval baselines are overlays of the prompt; these overlay one layer.

A :class:`LayerOverlay` is a no-weight edit like the in-context and retrieval
baselines: it lives on ``model.prompt_edits`` (its ``rewrite`` leaves the prompt
alone) and an :class:`~workbench.editing.handle.EditHandle` adds and removes it.
While it is active it keeps a forward hook on one module of one block: GRACE on
the FFN (``bridge.blocks[layer].mlp``, whose output is the FFN's raw output, before
any post-FFN norm), WISE on its value matrix (``mlp.out``, whose input is the FFN
keys). Every forward pass goes through that module -- probing,
generation with a KV cache, tracing, the v* search of a later edit -- so the
memory acts everywhere the weights would.

All memories of one kind at one layer form one memory (as retrieval edits do):
the oldest active one answers for all, the others pass through. So adding an
edit and reverting it gives back exactly the memory there was, and a prompt the
memory does not claim leaves the hook with the FFN's output object untouched
(bitwise the unedited model).

Example:
    >>> h = wb.edit(model, fact, method="grace")            # doctest: +SKIP
    >>> h.prompt_edit.members()                              # doctest: +SKIP
    [GraceOverlay(layer=9, entries=1)]
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.core.model import Model


def encode_tensor(t: Tensor) -> dict:
    """A float32 tensor as JSON: shape and base64 of its bytes (exact, unlike decimal floats)."""
    a = t.detach().to(torch.float32).contiguous().cpu().numpy()
    return {"shape": list(a.shape), "float32": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_tensor(d: dict, *, what: str) -> Tensor:
    """Inverse of :func:`encode_tensor`; a damaged entry is a :class:`WorkbenchError` naming ``what``."""
    try:
        shape = [int(s) for s in d["shape"]]
        raw = base64.b64decode(d["float32"], validate=True)
        a = np.frombuffer(raw, dtype=np.float32).reshape(shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise WorkbenchError(f"saved {what} is corrupt ({exc.__class__.__name__}: {exc})") from None
    return torch.from_numpy(a.copy())


class LayerOverlay:
    """Base of the in-forward memories: one hook on ``blocks[layer].mlp`` while active.

    Subclasses set ``kind`` and implement :meth:`respond` (the FFN input and output
    of a forward pass -> a new output, or None to leave it alone) over
    :meth:`members`.
    """

    kind = "layer-memory"

    def __init__(self, layer: int, active_list: list | None = None) -> None:
        self.layer = int(layer)
        # The model's prompt_edits list: lets this memory find the others at its layer.
        self._active = active_list if active_list is not None else [self]
        self._hook = None

    # -- membership -------------------------------------------------------------------
    def members(self) -> list:
        """The active memories of this kind at this layer, oldest first: together, one memory."""
        return [e for e in self._active if type(e) is type(self) and e.layer == self.layer]

    def rewrite(self, prompt: str) -> str:
        return prompt  # the memory acts in the forward pass, not on the text

    # -- the hook ---------------------------------------------------------------------
    @staticmethod
    def module(model: Model, layer: int):
        """The module whose forward the memory hooks: block ``layer``'s FFN (WISE: its value matrix)."""
        return model.bridge.blocks[layer].mlp

    def attach(self, model: Model) -> None:
        """Start acting on ``model`` (called by ``commit_prompt_edit``)."""
        if self._hook is None:
            self._hook = self.module(model, self.layer).register_forward_hook(self._forward_hook)

    def detach(self) -> None:
        """Stop acting (called by ``EditHandle.revert``); the other members go on."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _forward_hook(self, module, args, output):
        members = self.members()
        if not members or members[0] is not self or not args or not isinstance(output, Tensor):
            return None  # another member answers for the memory (or the call is not one we read)
        return self.respond(args[0], output, members)

    def respond(self, inputs: Tensor, output: Tensor, members: list) -> Tensor | None:
        raise NotImplementedError


#: memory kind -> loader(saved dict, model) used by ``load_edit`` when none is given
LOADERS: dict[str, Callable] = {}


def register_loader(kind: str):
    """Decorator naming the function that rebuilds a saved no-weight edit of ``kind``."""

    def wrap(fn):
        LOADERS[kind] = fn
        return fn

    return wrap


#: memory kind -> ``from_state(meta, tensors, model)``: rebuilds a no-weight edit too large for an
#: edit file from a sequential run's checkpoint (see :mod:`workbench.evaluation.checkpoint`).
STATE_LOADERS: dict[str, Callable] = {}
