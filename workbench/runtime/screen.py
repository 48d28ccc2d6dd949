"""Each row's exact top-k logits without the full float32 unembedding: an int8 screen with a proven bound.

Sampling and greedy decoding need only each row's few largest logits, yet the float32 product
over Gemma's 262,144-token vocabulary reads 671 MB of weights at every step. On a CPU without
native bfloat16 (most laptops) that read is the step's largest cost for a batch of a few rows.
:class:`Int8Screen` finds the same top k in three passes:

1. a rough logit for every token from int8 weights (per-token scales) and int8 activations
   (the fbgemm kernel behind PyTorch's dynamic quantized linear: a quarter of the bytes). The
   activations are put on the kernel's grid here first, so that their rounding error ``e``
   is known, not guessed; the few hidden dimensions with the largest values (Gemma's final
   hidden states have a handful several times the rest) are left out of the int8 product and
   added in float32;
2. a bound on ``|exact - rough|`` for every row and token, by Cauchy-Schwarz on the two
   rounding errors: ``||w_t - w~_t|| * ||x_r|| + ||w~_t|| * ||e_r||``, plus a margin for
   float32 rounding (relative to the row's largest rough logit);
3. the exact float32 logits of every token that could still be in the top k: the ``k`` best
   rough ones give a floor ``L_r`` (k real tokens reach it), and only tokens with
   ``rough + bound >= L_r`` can exceed it.

The kernel is fbgemm's, packed for it whatever engine PyTorch would pick (the "x86" engine packs
for oneDNN on a CPU with VNNI), and each screen checks at build that the kernel returns the
dequantised product of the grid values; where it does not, :class:`ScreenUnavailable` is raised
and top-k falls back to the float32 product.

So the result is the float32 top k by construction, whatever the bound's slack costs in
candidates (a few hundred to a few thousand a row on Gemma against 262,144), not an
approximation; ``tests/test_screen.py`` checks the bound against the float32 product on the
model's real hidden states and the top k against ``topk`` of the full product.

Example:
    >>> screen = Int8Screen.for_model(model)             # doctest: +SKIP
    >>> values, ids = screen.top_logits(hidden, 5)       # float32 values, largest first  # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

#: Hidden dimensions computed in float32 beside the int8 product: the rows' largest, chosen on first use.
OUTLIERS = 16
#: Relative and absolute margin added to the bound for float32 rounding in both products.
ROUNDING = 1e-4
#: Seven-bit activations (0..127, ``reduce_range``): fbgemm's int16 pair sums cannot saturate.
_ACT_LEVELS = 127


class ScreenUnavailable(RuntimeError):
    """The int8 kernel here does not compute what the bound assumes; the float32 product is used."""


def available() -> bool:
    """Whether this PyTorch has the int8 dynamic linear kernel (fbgemm / x86) and it is not switched off.

    ``WORKBENCH_INT8_SCREEN=0`` switches the screen off (the plain float32 product is used).
    """
    if os.environ.get("WORKBENCH_INT8_SCREEN", "1") == "0":
        return False
    try:
        return "fbgemm" in torch.backends.quantized.supported_engines
    except Exception:  # noqa: BLE001 -- a build without quantized kernels: fall back quietly
        return False


def _grid(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``x`` on the kernel's own grid (asymmetric, 128 levels over ``[min(0, x), max(0, x)]`` of the
    whole batch), its zero point and step: values already on it pass the kernel's quantisation
    unchanged, so the rounding error ``x - x~`` is known exactly."""
    lo, hi = x.min().clamp_max(0), x.max().clamp_min(0)
    step = ((hi - lo) / _ACT_LEVELS).clamp_min(1e-12)
    zero = torch.round(-lo / step)
    return ((torch.round(x / step) + zero).clamp_(0, _ACT_LEVELS) - zero) * step, zero, step


class Int8Screen:
    """Exact top-k logits of ``hidden @ weight.T + bias`` through an int8 screen; see the module docstring.

    Args:
        weight: the unembedding, ``[vocab, d_model]`` (float32; kept by reference for the exact pass).
        bias: its bias or ``None``.
        outliers: hidden dimensions to compute in float32 (the int8 product leaves them out).
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, outliers: Tensor) -> None:
        self.weight = weight.detach()
        self.bias = None if bias is None else bias.detach().float()
        self.outliers = outliers.to(torch.long)
        w = self.weight.float()
        keep = torch.ones(w.shape[1], dtype=torch.bool)
        keep[self.outliers] = False
        self.w_out = w[:, self.outliers].contiguous()
        scales = torch.empty(w.shape[0])
        q = torch.empty(w.shape, dtype=torch.int8)
        # Per token: ||w_t - w~_t|| over the int8 dimensions, and ||w~_t||.
        self.w_errs = torch.empty(2, w.shape[0])
        # In slices of rows, so that no second float32 copy of the matrix is made.
        for lo in range(0, w.shape[0], 16384):
            part = w[lo : lo + 16384] * keep
            s = part.abs().amax(1).clamp_min(1e-12) / 127
            qi = torch.round(part / s[:, None]).clamp_(-127, 127)
            back = qi * s[:, None]
            scales[lo : lo + 16384] = s
            self.w_errs[0, lo : lo + 16384] = (part - back).norm(dim=1)
            self.w_errs[1, lo : lo + 16384] = back.norm(dim=1)
            q[lo : lo + 16384] = qi.to(torch.int8)
        engine = torch.backends.quantized.engine
        with warnings.catch_warnings():
            # PyTorch marks its quantized-tensor constructors deprecated; the kernel is what we use.
            warnings.simplefilter("ignore")
            qw = torch._make_per_channel_quantized_tensor(q, scales.double(), torch.zeros(len(scales), dtype=torch.long), 0)
            try:
                # fbgemm's kernel, whose activation grid rough() reproduces: the "x86" engine may
                # pack for oneDNN instead on a CPU with VNNI.
                torch.backends.quantized.engine = "fbgemm"
                self.packed = torch.ops.quantized.linear_prepack(qw, None)
            finally:
                torch.backends.quantized.engine = engine
        self.keep = keep
        self._qw = q, scales
        self._check()

    def _check(self) -> None:
        """Refuse to serve (ScreenUnavailable) unless the kernel gives the dequantised product of the
        grid values: the bound assumes it, so a kernel that rounds otherwise must not be trusted."""
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(3, self.weight.shape[1], generator=gen) * self.keep
        x[0, 0] = 40.0 if self.keep[0] else x[0, 0]
        q, scales = self._qw
        rows = torch.randint(0, q.shape[0], (512,), generator=gen)
        rough, _ = self.rough(x)
        xq = _grid(x)[0]
        want = xq.double() @ (q[rows].double() * scales[rows, None].double()).T
        if self.bias is not None:
            want = want + self.bias[rows].double()
        got = rough[:, rows].double()
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-4 * (1 + float(want.abs().max()))):
            raise ScreenUnavailable("the int8 kernel does not round as the screen's bound assumes")
        del self._qw

    @classmethod
    def for_model(cls, model, hidden: Tensor) -> "Int8Screen":
        """The screen of ``model``'s unembedding, kept in ``model.memo`` while the weight is unchanged.

        ``hidden`` (the first rows it is asked about) picks the float32 dimensions.
        """
        lin = model.bridge.unembed.original_component
        w = lin.weight
        stamp = (w.data_ptr(), w._version, tuple(w.shape))

        def build() -> "Int8Screen | None":
            outliers = hidden.detach().float().abs().amax(0).topk(min(OUTLIERS, hidden.shape[-1])).indices
            try:
                return cls(w, lin.bias, outliers)
            except ScreenUnavailable:
                return None  # kept too, so that the check is not paid again for every call

        got = model.memo.get(("int8_screen", id(w)), build, stamp=stamp)
        if got is None:
            raise ScreenUnavailable("the int8 kernel does not round as the screen's bound assumes")
        return got

    def rough(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Every token's rough logit ``[rows, vocab]`` and the bound on its error, same shape."""
        h = hidden.detach().float()
        x = h * self.keep
        xq, zero, step = _grid(x)
        # A last row holding the grid's two ends makes the batch's range the grid's.
        ends = torch.zeros(1, x.shape[1])
        ends[0, 0], ends[0, 1] = -zero * step, (_ACT_LEVELS - zero) * step
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rough = torch.ops.quantized.linear_dynamic(torch.cat([xq, ends]), self.packed, True)[:-1]
        rough = rough + h[:, self.outliers] @ self.w_out.T
        if self.bias is not None:
            rough = rough + self.bias
        # One small product instead of two [rows, vocab] temporaries.
        norms = torch.stack([x.norm(dim=1), (x - xq).norm(dim=1)], dim=1)
        bound = torch.addmm(ROUNDING * (1 + rough.abs().amax(1, keepdim=True)), norms, self.w_errs)
        return rough, bound

    @torch.no_grad()
    def top_logits(self, hidden: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Each row's ``k`` largest float32 logits (bias included, no soft-cap) and their token ids."""
        h = hidden.detach().float()
        k = min(k, self.weight.shape[0])
        rough, bound = self.rough(h)
        first = rough.topk(k, dim=-1).indices
        floor = self._exact(h, first).amin(-1, keepdim=True)
        maybe = (rough + bound) >= floor
        values, ids = [], []
        for r in range(h.shape[0]):
            # The first k always qualify when the bound holds; the union keeps k in hand regardless.
            cand = torch.unique(torch.cat([maybe[r].nonzero()[:, 0], first[r]]))
            exact = self._exact(h[r : r + 1], cand[None])[0]
            v, where = exact.topk(k)
            values.append(v)
            ids.append(cand[where])
        return torch.stack(values), torch.stack(ids)

    def _exact(self, h: Tensor, ids: Tensor) -> Tensor:
        """Float32 logits of tokens ``ids`` (``[rows, n]``) for each row of ``h``."""
        exact = torch.einsum("rd,rcd->rc", h, self.weight[ids].float())
        if self.bias is not None:
            exact = exact + self.bias[ids]
        return exact
