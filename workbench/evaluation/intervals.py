"""95 % bootstrap intervals over facts, and paired differences between methods.

A rate in a summary is a mean over facts; its interval comes from resampling
the facts with replacement (percentile bootstrap, a fixed seed so that a report
is reproducible). Two methods run on the same facts are compared through the
per-fact differences, which cancels the facts' own difficulty: a paired
interval is much narrower than two separate ones side by side.

Example:
    >>> iv = bootstrap([1, 0, 1, 1, 0, 1, 1, 1])
    >>> round(iv.mean, 3), iv.lo <= iv.mean <= iv.hi
    (0.75, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workbench.errors import WorkbenchError
from workbench.results import Result

#: Resamples and seed every summary's intervals use (recorded in a report's settings).
SAMPLES = 2000
SEED = 0
LEVEL = 0.95


def mean_of(values) -> float | None:
    """The plain mean of the values that are not None; None when there are none.

    Example:
        >>> mean_of([1.0, None, 0.0]), mean_of([])
        (0.5, None)
    """
    kept = [float(v) for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


@dataclass(frozen=True)
class Interval(Result):
    """A mean over ``n`` facts and its bootstrap interval ``[lo, hi]``."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def half_width(self) -> float:
        """Half the interval's width (what ``value ± half_width`` prints)."""
        return (self.hi - self.lo) / 2

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def bootstrap(values: Sequence[float | None], *, samples: int = SAMPLES, seed: int = SEED,
              level: float = LEVEL) -> Interval | None:
    """The mean of ``values`` (Nones skipped) with a percentile-bootstrap interval; None if empty.

    With one value the interval is that value (nothing to resample).
    """
    if not 0 < level < 1:
        raise WorkbenchError(f"level must be between 0 and 1, got {level!r}")
    if not isinstance(samples, int) or samples < 1:
        raise WorkbenchError(f"samples must be a positive integer, got {samples!r}")
    x = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    if x.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(samples, x.size))].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    mean = float(x.mean())
    # Quantiles of a resampled mean can miss the mean itself by rounding when all
    # values are equal; an interval always holds its own estimate.
    return Interval(mean, min(float(lo), mean), max(float(hi), mean), int(x.size))


def paired_difference(a: Sequence[float | None], b: Sequence[float | None], **kwargs) -> Interval | None:
    """Mean and interval of ``a[i] - b[i]`` over the facts where both are measured.

    Example:
        >>> d = paired_difference([1, 1, 0, 1], [0, 1, 0, 0])
        >>> d.mean, d.n
        (0.5, 4)
    """
    if len(a) != len(b):
        raise WorkbenchError(f"paired values differ in length ({len(a)} vs {len(b)}): not the same facts")
    return bootstrap([x - y for x, y in zip(a, b) if x is not None and y is not None], **kwargs)
