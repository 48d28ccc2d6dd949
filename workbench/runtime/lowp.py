"""Running decoder blocks in bfloat16, on CPUs that do it natively (the v* search, the trace).

Most of a v* search step (ROME, MEMIT, PMET) is the forward and backward pass
through the blocks above the edited layer. On a CPU with native bfloat16
arithmetic (AVX-512 BF16 or AMX), those matrix products run about twice as fast
in bfloat16 as in float32. :class:`LowPrecisionBlocks` is a context manager
that, while active, gives the 2-D weights of the decoder blocks from
``start_block`` up bfloat16 storage (copies cached on the model) and turns on
CPU autocast, so the products run in bfloat16 without casting the weights on
every call. On exit every weight gets its own float32 storage back — the same
tensors, so the model is bitwise what it was (``tests/test_editing.py``).

The causal trace uses it for its restored runs (``trace(..., precision="auto")``).
The search uses it only for its steps; where the stopping rule is met it
re-measures the loss in float32, so the reported NLL and the decision to stop
are float32 numbers (see ``optimize_deltas``).

Example:
    >>> with LowPrecisionBlocks(model, start_block=4):     # doctest: +SKIP
    ...     hidden = runner.hidden(hooks)                 # blocks 4.. in bfloat16
    ...     loss(hidden).backward()                       # backward inside too
"""

from __future__ import annotations

import torch
from torch import Tensor

from workbench.runtime.bfloat16 import bf16_copies, native_bf16


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
