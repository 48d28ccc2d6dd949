"""The batched sweep: score every (kind, token, layer) cell of a trace or a patching run.

Cells that restart the forward pass at the same layer share one batched run of
the blocks above it (:class:`~workbench.locate.blocks.BlockRunner`); cells before
the first changed token are no-ops and get the corrupted probability without one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from workbench.locate.blocks import BlockRunner, answer_probs
from workbench.locate.cells import window_layers
from workbench.progress import CancelToken, progress


def sweep(
    runner: BlockRunner,
    corrupted: list[Tensor],
    kinds: Sequence[str],
    window: int,
    answer_id: int,
    first_changed: int,
    corrupted_prob: float,
    *,
    cancel: CancelToken | None = None,
    max_tokens: int = 8192,
    desc: str = "tracing",
) -> dict[str, np.ndarray]:
    """Score every (kind, token, layer) cell by restoring clean states into corrupted runs.

    Args:
        runner: the clean run (states to restore, block arguments).
        corrupted: ``corrupted[s]`` is the corrupted residual ``[copies, pos, d_model]``
            entering block ``s``.
        first_changed: first position whose state differs between clean and corrupted
            runs; earlier cells are no-ops and get ``corrupted_prob`` without a run.
        max_tokens: rows x positions per forward pass (bounds memory).
    """
    model = runner.model
    n_layers, copies, n_pos = model.n_layers, corrupted[0].shape[0], corrupted[0].shape[1]
    scores = {k: np.full((n_pos, n_layers), corrupted_prob, dtype=np.float64) for k in kinds}
    # Group cells by the layer their restored run starts at: one batch per group chunk.
    groups: list[tuple[str, int, list[tuple[int, int]]]] = []
    positions = range(first_changed, n_pos)
    for kind in kinds:
        by_start: dict[int, list[tuple[int, int]]] = {}
        for layer in range(n_layers):
            start = layer + 1 if kind == "resid" else window_layers(layer, window, n_layers)[0]
            cells_here = [(t, layer) for t in positions]
            if kind == "resid" and layer == n_layers - 1:
                # The last block's output at an earlier token reaches nothing: the
                # answer is read at the last token only.
                cells_here = [(t, layer) for t in positions if t == n_pos - 1]
            by_start.setdefault(start, []).extend(cells_here)
        per_run = max(1, max_tokens // (copies * n_pos))
        for start, cells in by_start.items():
            for i in range(0, len(cells), per_run):
                groups.append((kind, start, cells[i : i + per_run]))

    for kind, start, cells in progress(groups, desc=desc, cancel=cancel):
        x = corrupted[start].repeat(len(cells), 1, 1)
        hooks = []
        if kind == "resid":
            for c, (t, _) in enumerate(cells):
                x[c * copies : (c + 1) * copies, t] = runner.resid[start][0, t]
        else:
            hooks = _window_hooks(runner, kind, cells, start, window, copies)
        if start < n_layers:
            hidden = runner.run(start, x, hooks)
        else:  # restoring the last block's output: nothing left to run
            hidden = model.bridge.ln_final(x[:, -1])
        probs = answer_probs(model, hidden, answer_id).view(len(cells), copies).mean(1)
        for (t, layer), p in zip(cells, probs.tolist()):
            scores[kind][t, layer] = p
    return scores


def _window_hooks(runner: BlockRunner, kind: str, cells, start: int, window: int, copies: int):
    """Hooks restoring ``kind`` output at each cell's token, on its window's layers."""
    model = runner.model
    n_layers = model.n_layers
    by_layer: dict[int, tuple[list[int], list[int]]] = {}
    for c, (t, layer) in enumerate(cells):
        lo, hi = window_layers(layer, window, n_layers)
        for j in range(lo, hi):
            rows, pos = by_layer.setdefault(j, ([], []))
            rows.extend(range(c * copies, (c + 1) * copies))
            pos.extend([t] * copies)

    def restore(j: int, rows: list[int], pos: list[int]):
        rows_t = torch.tensor(rows, device=model.device)
        pos_t = torch.tensor(pos, device=model.device)
        clean = runner.acts[kind][j][0, pos_t]

        def fn(x, hook):
            x = x.clone()
            x[rows_t, pos_t] = clean.to(x.dtype)
            return x
        return fn

    return [(model.roles.hook(kind, j), restore(j, *rp)) for j, rp in sorted(by_layer.items()) if j >= start]
