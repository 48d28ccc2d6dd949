"""The cells of a trace: which states can be restored, over which layers, and the settings check.

A *cell* is a (token, layer) pair of one *kind* of state: ``"resid"`` (the block
output), ``"mlp"`` or ``"attn"`` (what the FFN / attention adds, restored over a
window of layers around the cell's layer, as ROME does).

Example:
    >>> check_kinds("all")
    ('resid', 'mlp', 'attn')
"""

from __future__ import annotations

import math

from workbench.errors import WorkbenchError

KINDS = ("resid", "mlp", "attn")


def check_settings(samples: int, window: int, noise: float, kinds) -> tuple[str, ...]:
    """Validate a trace's settings; returns the kinds as a tuple without repeats.

    Raises:
        WorkbenchError: ``samples`` or ``window`` below 1, negative or non-finite noise, unknown kind.
    """
    if not isinstance(samples, int) or samples < 1:
        raise WorkbenchError(f"samples must be a whole number >= 1, got {samples!r}")
    check_window(window)
    if not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
        raise WorkbenchError(f"noise must be a finite number >= 0, got {noise!r}")
    return check_kinds(kinds)


def check_window(window: int) -> None:
    """Raise :class:`WorkbenchError` unless ``window`` is a whole number of layers >= 1."""
    if not isinstance(window, int) or window < 1:
        raise WorkbenchError(f"window must be a whole number of layers >= 1, got {window!r}")


def check_kinds(kinds) -> tuple[str, ...]:
    """``kinds`` (a name, ``"all"`` or several names) as a tuple of known kinds, without repeats."""
    if isinstance(kinds, str):
        kinds = KINDS if kinds == "all" else (kinds,)
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise WorkbenchError(f"unknown kind {bad[0] if bad else None!r}; choose from {', '.join(KINDS)} or 'all'")
    return tuple(dict.fromkeys(kinds))


def window_layers(layer: int, window: int, n_layers: int) -> tuple[int, int]:
    """Layers ``[lo, hi)`` restored for an mlp/attn cell at ``layer`` (ROME's window).

    Example:
        >>> window_layers(0, 10, 18), window_layers(9, 10, 18), window_layers(17, 10, 18)
        ((0, 5), (4, 14), (12, 18))
    """
    return max(0, layer - window // 2), min(n_layers, layer + (window + 1) // 2)
