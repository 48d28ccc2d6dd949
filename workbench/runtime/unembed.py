"""Log-probabilities over the whole vocabulary for a handful of hidden states, cheaply.

The v* search of ROME, MEMIT and PMET (and sampling in :func:`~workbench.probing.generate`) unembeds a few dozen hidden states every
step, forward and backward. With Gemma's 262k-token vocabulary that product is
about half of a step on a CPU, and its cost is compute, not Python. So
:class:`MixedUnembed` computes it in two parts:

* every logit in bfloat16 (on the 2-core CPU this project is measured on, which
  has AVX-512 BF16, the forward product for 16 rows took 0.044 s instead of
  0.12 s in float32), and
* the logits that matter exactly, in float32: the tokens the loss reads (the
  object's tokens) and each row's ``top_k`` most likely tokens, which hold
  nearly all of the probability mass.

The exact values replace the bfloat16 ones before the softmax, so the target
log-probabilities are exact up to the normaliser's tail, whose error is about
the tail's mass times bfloat16's relative rounding (~0.4 %). Gradients flow
through both parts. ``tests/test_editing.py`` compares losses and gradients
with the plain float32 unembedding.

Where bfloat16 is emulated (most laptops) the full-vocabulary products stay float32, and
top-k alone (sampling, greedy decoding) goes through the int8 screen of
:mod:`~workbench.runtime.screen`, which returns the float32 top k exactly.

Example:
    >>> unembed = MixedUnembed(model)                       # doctest: +SKIP
    >>> logp = unembed(hidden, keep=target_tokens)          # [rows, d_vocab]  # doctest: +SKIP
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.runtime import screen
from workbench.runtime.bfloat16 import bf16_copies, native_bf16


def pays_off(model) -> bool:
    """Whether bfloat16 products are fast here: a GPU, or a CPU that does bfloat16 natively.

    Example:
        >>> pays_off(model)   # on a laptop without AVX-512 BF16: False  # doctest: +SKIP
        False
    """
    return model.device.type != "cpu" or native_bf16()


class MixedUnembed:
    """Bfloat16 logits everywhere, float32 where they count; see the module docstring.

    Args:
        model: a loaded Model whose unembedding is a linear layer (otherwise use
            ``model.logits_from_hidden``; :meth:`supported` says which).
        top_k: tokens per row computed exactly besides ``keep``.
    """

    def __init__(self, model, *, top_k: int = 64, lowp: bool | None = None) -> None:
        self.model = model
        self.top_k = top_k
        lin = model.bridge.unembed.original_component
        self.weight: Tensor = lin.weight
        self.bias: Tensor | None = lin.bias
        self.cap = getattr(model.hf_model.config, "final_logit_softcapping", None)
        # Where bfloat16 is emulated (a CPU without AVX-512 BF16 or AMX: most laptops) the
        # "cheap" product is the slow one: a ROME edit took about a minute there, most of it
        # here. Such machines get the plain float32 product through the same interface.
        self.lowp = pays_off(model) if lowp is None else lowp
        self.weight_bf16 = bf16_copies(model, [self.weight])[0] if self.lowp else None
        # Without bfloat16, top-k (sampling, greedy decoding) goes through an int8 screen that
        # returns the float32 top k exactly: a quarter of the bytes read per step.
        self.screened = not self.lowp and model.device.type == "cpu" and screen.available()

    @staticmethod
    def supported(model) -> bool:
        """Whether the model's unembedding is a plain linear layer this class can split."""
        lin = getattr(model.bridge.unembed, "original_component", None)
        return isinstance(lin, torch.nn.Linear)

    def __call__(
        self, hidden: Float[Tensor, "rows d_model"], keep: Int[Tensor, " k"] | None = None,
        groups: list[tuple[Tensor, Tensor]] | None = None,
    ) -> Float[Tensor, "rows d_vocab"]:
        """Log-softmax over the vocabulary; columns in ``keep`` and each row's top tokens exact.

        The exact columns are shared by all rows (the union of their top tokens and ``keep``).
        ``groups``, ``[(rows, keep), ...]`` covering every row once, gives each group of rows
        its own union instead: the batched target search, so that each fact's rows get the
        columns its own search would.
        """
        if not self.lowp:
            return self._float32_logits(hidden).log_softmax(-1)
        rough = (hidden.to(torch.bfloat16) @ self.weight_bf16.T).float()
        if groups is None:
            logits = self._exact(hidden, rough, keep)
        else:
            logits = rough + self.bias.float() if self.bias is not None else rough
            for rows, group_keep in groups:
                logits = logits.index_copy(0, rows, self._exact(hidden[rows], rough[rows], group_keep))
        if self.cap:
            logits = torch.tanh(logits / self.cap) * self.cap
        return logits.log_softmax(-1)

    def _float32_logits(self, hidden: Tensor) -> Tensor:
        """Every logit in float32 (bias and soft-cap applied): the path where bfloat16 does not pay."""
        logits = hidden.float() @ self.weight.float().T
        if self.bias is not None:
            logits = logits + self.bias.float()
        if self.cap:
            logits = torch.tanh(logits / self.cap) * self.cap
        return logits

    def _exact(self, hidden: Tensor, rough: Tensor, keep: Tensor | None) -> Tensor:
        """``rough`` (no bias yet) with the bias, and the rows' top tokens and ``keep`` in float32."""
        with torch.no_grad():
            top = rough.topk(min(self.top_k, rough.shape[-1]), dim=-1).indices.flatten()
            cols = torch.cat([top, keep.to(top.device)]) if keep is not None else top
            cols = torch.unique(cols)
        exact = hidden.float() @ self.weight[cols].float().T
        if self.bias is not None:
            rough = rough + self.bias.float()
            exact = exact + self.bias[cols].float()
        return rough.index_copy(-1, cols, exact)

    @torch.no_grad()
    def top_logits(self, hidden: Float[Tensor, "rows d_model"], k: int) -> tuple[Tensor, Tensor]:
        """Each row's ``k`` largest logits, in float32, and their token ids (largest first).

        Candidates come from the bfloat16 logits (``max(k, top_k)`` per row), then
        their logits are recomputed in float32 and the top ``k`` taken: the same
        tokens and values as a float32 top-k unless a token outside the candidates
        beats them, which bfloat16's ~0.4 % rounding cannot do for k well below top_k.
        Without bfloat16 on a CPU, the int8 screen (:mod:`~workbench.runtime.screen`) gives
        the float32 top k, proven (``WORKBENCH_INT8_SCREEN=0``: the full float32 product).

        Example:
            >>> values, ids = MixedUnembed(model).top_logits(hidden[:, -1], 5)   # doctest: +SKIP
        """
        if not self.lowp and self.screened:
            try:
                values, ids = screen.Int8Screen.for_model(self.model, hidden).top_logits(hidden, k)
            except screen.ScreenUnavailable:
                self.screened = False  # and the float32 product below
            else:
                if self.cap:
                    values = torch.tanh(values / self.cap) * self.cap
                return values, ids
        if not self.lowp:
            logits = self._float32_logits(hidden)
            return logits.topk(min(k, logits.shape[-1]), dim=-1)
        rough = hidden.to(torch.bfloat16) @ self.weight_bf16.T
        n_cand = min(max(k, self.top_k), rough.shape[-1])
        cand = rough.float().topk(n_cand, dim=-1).indices
        exact = torch.einsum("rd,rcd->rc", hidden.float(), self.weight[cand].float())
        if self.bias is not None:
            exact = exact + self.bias[cand].float()
        if self.cap:
            exact = torch.tanh(exact / self.cap) * self.cap
        values, where = exact.topk(min(k, n_cand), dim=-1)
        return values, cand.gather(-1, where)
