"""Running the upper blocks of the v* search in bfloat16, on CPUs that do it natively.

Most of a v* search step (ROME, MEMIT, PMET) is the forward and backward pass
through the blocks above the edited layer. On a CPU with native bfloat16
arithmetic (AVX-512 BF16 or AMX), those matrix products run about twice as fast
in bfloat16 as in float32. :class:`LowPrecisionBlocks` is a context manager
that, while active, gives the 2-D weights of the decoder blocks from
``start_block`` up bfloat16 storage (copies cached on the model) and turns on
CPU autocast, so the products run in bfloat16 without casting the weights on
every call. On exit every weight gets its own float32 storage back — the same
tensors, so the model is bitwise what it was (``tests/test_editing.py``).

The search uses it only for its steps; where the stopping rule is met it
re-measures the loss in float32, so the reported NLL and the decision to stop
are float32 numbers (see ``optimize_deltas``).

Example:
    >>> with LowPrecisionBlocks(model, start_block=4):     # doctest: +SKIP
    ...     hidden = runner.hidden(hooks)                 # blocks 4.. in bfloat16
    ...     loss(hidden).backward()                       # backward inside too
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import Tensor

_CACHE_ATTR = "_workbench_bf16_copies"


@functools.cache
def native_bf16() -> bool:
    """Whether this machine's CPU advertises native bfloat16 arithmetic (Linux cpuinfo flags).

    False where it cannot tell (other systems): emulated bfloat16 would be slower than float32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def usable(model) -> bool:
    """Whether :class:`LowPrecisionBlocks` applies: float32 weights on a CPU with native bfloat16."""
    return model.device.type == "cpu" and native_bf16() and model.hf_model.dtype == torch.float32


class LowPrecisionBlocks:
    """While active, decoder blocks ``start_block..`` compute in bfloat16 (see the module docstring).

    Both the forward and the backward of a step must run inside: autograd keeps the
    bfloat16 weights it multiplied by.
    """

    def __init__(self, model, start_block: int = 0) -> None:
        self.model = model
        # The bridge's blocks hold the HF layers' parameters, whatever the family calls its layer list.
        self.params: list[torch.nn.Parameter] = [
            p for block in model.bridge.blocks[start_block:] for p in block.parameters() if p.dim() == 2
        ]
        self._saved: list[Tensor] = []
        self._autocast = torch.autocast("cpu", dtype=torch.bfloat16)

    def __enter__(self) -> LowPrecisionBlocks:
        copies = bf16_copies(self.model, self.params)
        self._saved = [p.data for p in self.params]
        try:
            for p, c in zip(self.params, copies):
                p.data = c
            self._autocast.__enter__()
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._autocast.__exit__(*exc)
        finally:
            self._restore()

    def _restore(self) -> None:
        for p, s in zip(self.params, self._saved):
            p.data = s
        self._saved = []


def bf16_copies(model, params: list[Tensor]) -> list[Tensor]:
    """bfloat16 copies of ``params``, kept on the model while each weight is unchanged.

    Shared by :class:`LowPrecisionBlocks` and the mixed-precision unembedding.

    Example:
        >>> w = model.hf_model.lm_head.weight                          # doctest: +SKIP
        >>> bf16_copies(model, [w])[0] is bf16_copies(model, [w])[0]  # doctest: +SKIP
        True
    """
    held: dict[int, tuple[tuple, Tensor]] = getattr(model, _CACHE_ATTR, None) or {}
    out = []
    for p in params:
        # An edit writes weights in place (bumping _version) or replaces them (new data_ptr).
        key = (p.data_ptr(), p._version, p.device, tuple(p.shape))
        got = held.get(id(p))
        if got is None or got[0] != key:
            got = (key, p.detach().to(torch.bfloat16))
            held[id(p)] = got
        out.append(got[1])
    setattr(model, _CACHE_ATTR, held)
    return out
