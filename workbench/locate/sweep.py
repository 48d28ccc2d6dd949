"""The batched sweep: score every (kind, token, layer) cell of a trace or a patching run.

Restoring a clean state at (token t, layer l) changes nothing below the first
block it enters nor at positions before t (attention is causal). So a cell's
restored run starts from the corrupted residual at that block, for positions
``t..`` only, with the corrupted run's keys and values standing in for the
earlier positions (:class:`~workbench.locate.blocks.BlockRunner`). Cells that
start at the same (block, token) — of every kind — share one batched run; cells
before the first changed token are no-ops and get the corrupted probability
without one. Only the last position is unembedded, all cells' states together.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from workbench.locate.blocks import BlockRunner, States, answer_probs
from workbench.locate.cells import window_layers
from workbench.runtime.progress import CancelToken, progress

Cell = tuple[str, int, int]  # (kind, token, layer)


def cell_start(kind: str, layer: int, window: int, n_layers: int) -> int:
    """The first block a restored run of this cell has to run: the one after a restored
    block output (``resid``), or the first of the window (``mlp``/``attn``)."""
    return layer + 1 if kind == "resid" else window_layers(layer, window, n_layers)[0]


def plan(kinds: Sequence[str], n_pos: int, n_layers: int, window: int, first_changed: int) -> dict[tuple[int, int], list[Cell]]:
    """The cells that need a run, grouped by the (start block, token) their run begins at.

    Example:
        >>> groups = plan(("resid", "mlp"), n_pos=4, n_layers=3, window=2, first_changed=2)
        >>> groups[(1, 2)]
        [('resid', 2, 0), ('mlp', 2, 1)]
    """
    groups: dict[tuple[int, int], list[Cell]] = {}
    for kind in kinds:
        for layer in range(n_layers):
            for t in range(first_changed, n_pos):
                # The last block's output at an earlier token reaches nothing: the
                # answer is read at the last token only.
                if kind == "resid" and layer == n_layers - 1 and t != n_pos - 1:
                    continue
                groups.setdefault((cell_start(kind, layer, window, n_layers), t), []).append((kind, t, layer))
    return dict(sorted(groups.items()))


def sweep(
    runner: BlockRunner,
    corrupted: States,
    kinds: Sequence[str],
    window: int,
    answer_id: int,
    first_changed: int,
    corrupted_prob: float,
    *,
    cancel: CancelToken | None = None,
    max_tokens: int = 8192,
    desc: str = "tracing",
    precision: str = "float32",
) -> dict[str, np.ndarray]:
    """Score every (kind, token, layer) cell by restoring clean states into corrupted runs.

    Args:
        runner: the clean run (states to restore, block arguments).
        corrupted: the corrupted run's :class:`States` (``copies`` rows).
        first_changed: first position whose state differs between clean and corrupted
            runs; earlier cells are no-ops and get ``corrupted_prob`` without a run.
        max_tokens: rows x positions per forward pass (bounds memory).
        precision: ``"float32"``, or ``"bfloat16"``: the restored runs' blocks in bfloat16
            (:class:`~workbench.runtime.lowp.LowPrecisionBlocks`) and p(answer) from
            bfloat16 logits with the answer's logit and each row's top ones in float32
            (:class:`~workbench.runtime.unembed.MixedUnembed`) — for CPUs that do bfloat16 natively.
    """
    model = runner.model
    n_layers = model.n_layers
    copies, n_pos = corrupted.resid[0].shape[0], corrupted.resid[0].shape[1]
    scores = {k: np.full((n_pos, n_layers), corrupted_prob, dtype=np.float64) for k in kinds}
    batches = _batches(plan(kinds, n_pos, n_layers, window, first_changed), copies, n_pos, max_tokens)

    done: list[Cell] = []
    hidden: list[Tensor] = []
    low = precision == "bfloat16"
    for start, first, cells in progress(batches, desc=desc, cancel=cancel):
        x = corrupted.resid[start][:, first:].repeat(len(cells), 1, 1)
        for c, (kind, t, _) in enumerate(cells):
            if kind == "resid":  # positions in the run count from `first`
                x[c * copies : (c + 1) * copies, t - first] = runner.resid[start][0, t]
        if start < n_layers:
            hooks = _window_hooks(runner, cells, start, first, window, copies)
            with _blocks_in(model, precision, start):
                hidden.append(runner.run(start, x, hooks, first=first, prefix=corrupted.kv).float())
        else:  # restoring the last block's output: nothing left to run
            hidden.append(model.bridge.ln_final(x[:, -1]))
        done += cells
    if not done:
        return scores
    states = torch.cat(hidden)
    if low and _mixed_ok(model):
        probs = _mixed_answer_probs(model, states, answer_id)
    else:
        probs = answer_probs(model, states, answer_id)
    probs = probs.view(len(done), copies).mean(1)
    for (kind, t, layer), p in zip(done, probs.tolist()):
        scores[kind][t, layer] = p
    return scores


#: Tokens (rows x positions) below which a batched run costs about the same as a
#: smaller one: on a CPU, a block's matrix products on a few dozen tokens are bound
#: by reading the weights, not by arithmetic. Runs of the same start block are merged
#: (from the earliest token among them) while they stay under it.
MERGE_TOKENS = 512


def _batches(groups: dict[tuple[int, int], list[Cell]], copies: int, n_pos: int, max_tokens: int):
    """``(start, first, cells)`` runs: each (start, token) group alone, or several groups of one
    start merged into one run from the earliest token while the run stays small
    (:data:`MERGE_TOKENS`); the later tokens' rows then recompute a few unchanged positions,
    which costs less than another pass over the weights. Never over ``max_tokens``."""
    out: list[tuple[int, int, list[Cell]]] = []
    limit = min(MERGE_TOKENS, max_tokens)
    pending: tuple[int, int, list[Cell]] | None = None
    for (start, t), cells in groups.items():  # sorted by start, then token
        if pending is not None:
            p_start, p_first, p_cells = pending
            if p_start == start and (len(p_cells) + len(cells)) * copies * (n_pos - p_first) <= limit:
                pending = (p_start, p_first, p_cells + cells)
                continue
            out.append(pending)
        per_run = max(1, max_tokens // (copies * (n_pos - t)))
        chunks = [cells[i : i + per_run] for i in range(0, len(cells), per_run)]
        out += [(start, t, c) for c in chunks[:-1]]
        pending = (start, t, chunks[-1])
    if pending is not None:
        out.append(pending)
    return out


def _blocks_in(model: Model, precision: str, start: int):
    if precision != "bfloat16":
        return contextlib.nullcontext()
    from workbench.runtime.lowp import LowPrecisionBlocks

    return LowPrecisionBlocks(model, start_block=start)


def _mixed_ok(model: Model) -> bool:
    from workbench.runtime.unembed import MixedUnembed

    return MixedUnembed.supported(model)


def _mixed_answer_probs(model: Model, hidden: Tensor, answer_id: int, chunk: int = 256) -> Tensor:
    from workbench.runtime.unembed import MixedUnembed

    unembed = MixedUnembed(model)
    keep = torch.tensor([answer_id], device=hidden.device)
    with torch.no_grad():
        return torch.cat([unembed(hidden[i : i + chunk], keep=keep)[:, answer_id].exp()
                          for i in range(0, hidden.shape[0], chunk)])


def _window_hooks(runner: BlockRunner, cells: list[Cell], start: int, first: int, window: int, copies: int):
    """Hooks putting back each mlp/attn cell's clean output at its token (position
    ``t - first`` of the run), on the layers of its window, in the cell's rows of the batch."""
    model = runner.model
    at: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
    for c, (kind, t, layer) in enumerate(cells):
        if kind == "resid":
            continue
        lo, hi = window_layers(layer, window, model.n_layers)
        for j in range(max(lo, start), hi):
            rows, tokens = at.setdefault((kind, j), ([], []))
            rows.extend(range(c * copies, (c + 1) * copies))
            tokens.extend([t] * copies)

    def restore(kind: str, j: int, rows: list[int], tokens: list[int]):
        rows_t = torch.tensor(rows, device=model.device)
        tokens_t = torch.tensor(tokens, device=model.device)
        clean = runner.acts[kind][j][0, tokens_t]

        def fn(x, hook):
            x = x.clone()
            x[rows_t, tokens_t - first] = clean.to(x.dtype)
            return x
        return fn

    return [(model.roles.hook(kind, j), restore(kind, j, *rt)) for (kind, j), rt in sorted(at.items())]
