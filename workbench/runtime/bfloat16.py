"""bfloat16 on the CPU: whether it is native here, and bfloat16 copies of weights kept while unchanged.

Two speed-ups share these: the v* search's bfloat16 blocks
(:mod:`workbench.runtime.lowp`) and the mixed-precision unembedding
(:mod:`workbench.runtime.unembed`), which sampling in :func:`workbench.probing.generate` uses too.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from workbench.core.model import Model


@functools.cache
def native_bf16() -> bool:
    """Whether this machine's CPU advertises native bfloat16 arithmetic (Linux cpuinfo flags).

    False where it cannot tell (other systems): emulated bfloat16 would be slower than float32.
    ``WORKBENCH_BF16=1`` (or ``0``) overrides the reading: the test suite runs with
    ``1`` on a CPU without it to take the paths a bfloat16 machine takes (slowly).
    """
    forced = os.environ.get("WORKBENCH_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_copies(model: Model, params: list[Tensor]) -> list[Tensor]:
    """bfloat16 copies of ``params``, kept in ``model.memo`` while each weight is unchanged.

    Shared by :class:`~workbench.runtime.lowp.LowPrecisionBlocks` and :class:`~workbench.runtime.unembed.MixedUnembed`.

    Example:
        >>> w = model.hf_model.lm_head.weight                          # doctest: +SKIP
        >>> bf16_copies(model, [w])[0] is bf16_copies(model, [w])[0]  # doctest: +SKIP
        True
    """
    out = []
    for p in params:
        # An edit writes weights in place (bumping _version) or replaces them (new data_ptr):
        # either changes the stamp, and the copy is made again.
        stamp = (p.data_ptr(), p._version, p.device, tuple(p.shape))
        out.append(model.memo.get(("bf16", id(p)), lambda p=p: p.detach().to(torch.bfloat16), stamp=stamp))
    return out
