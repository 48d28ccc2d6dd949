"""The settings of one causal trace, in one place: :class:`TraceSettings`.

Everything that decides a trace's numbers (kinds, samples, noise, its scale, the
restore window, the seed, the scored answer, the arithmetic) with its default, its
check and the cache key it gives. :func:`~workbench.locate.tracing.trace`, its
preview, the reference trace, the trace cache, the UI and the CLI all take it.

Example:
    >>> s = TraceSettings(kinds="mlp", samples=3)
    >>> s.kinds, s.samples, s.window
    (('mlp',), 3, 10)
    >>> TraceSettings.of(s, seed=1).seed
    1
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workbench.checks import number, whole
from workbench.errors import WorkbenchError
from workbench.facts import Fact
from workbench.locate.cells import KINDS, check_settings
from workbench.locate.spans import prompt_and_subject
from workbench.core.model import Model

PRECISIONS = ("auto", "float32", "bfloat16")

#: Upper bounds of a trace's settings (the CLI declares the same: workbench/cli/arguments.py).
#: Samples run as one batch of noisy copies (attribution back-propagates them all at once;
#: 10**8 asked for 51 GB); ROME uses 10 and the app offers up to 100.
MAX_SAMPLES = 100
#: In subject-embedding stds (ROME: 3); far beyond it the subject is noise at any scale.
MAX_NOISE = 100.0
#: Layers restored around each layer; clipped to the model's depth anyway.
MAX_WINDOW = 1024
#: The noise generator takes a 64-bit seed.
MAX_SEED = 2**63 - 1


def check_precision(precision: str) -> None:
    """Raise :class:`WorkbenchError` unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise WorkbenchError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")


#: The largest difference from float32 a trace's scores may have for ``precision="auto"`` to
#: take bfloat16 (absolute, p(answer), on the benchmark's grid).
BF16_BOUND = 1e-3
#: What ``benchmarks/bf16_trace.py`` measured: per model, the bfloat16 trace's largest difference.
BF16_MEASURED = Path(__file__).resolve().parents[2] / "assets" / "results" / "bf16_trace.json"


def bf16_error(model: Model) -> float | None:
    """The committed measurement of this model's bfloat16 trace error (None: never measured)."""
    try:
        data = json.loads(BF16_MEASURED.read_text())
        return float(data["models"][str(model.name)]["max_abs_difference"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve_precision(model: Model, precision: str) -> str:
    """``"float32"`` or ``"bfloat16"`` for a trace's restored runs on this model.

    ``"auto"`` takes bfloat16 only where the CPU does it natively *and* the committed
    measurement for this model is within :data:`BF16_BOUND` of float32; otherwise float32.

    Example:
        >>> resolve_precision(model, "float32")
        'float32'
    """
    check_precision(precision)
    if precision == "auto":
        from workbench.runtime.lowp import usable

        error = bf16_error(model)
        return "bfloat16" if usable(model) and error is not None and error <= BF16_BOUND else "float32"
    return precision


@dataclass(frozen=True)
class TraceSettings:
    """What a causal trace is computed with; checked when made.

    Attributes:
        kinds: any of ``"resid"``, ``"mlp"``, ``"attn"``, or ``"all"`` (kept as a tuple without repeats).
        samples: corrupted copies N (the noise differs per copy).
        noise: noise scale in units of the subject-embedding std.
        noise_std: that std; by default :func:`~workbench.locate.noise.embedding_std`.
        window: layers restored around each layer for mlp/attn.
        seed: noise seed.
        answer: the word whose first token is scored; default the model's top-1 next token.
        precision: ``"auto"``, ``"float32"`` or ``"bfloat16"`` for the exact trace's restored runs.

    Raises:
        WorkbenchError: ``samples`` outside 1..:data:`MAX_SAMPLES`, ``window`` outside
            1..:data:`MAX_WINDOW`, noise outside 0..:data:`MAX_NOISE`, ``seed`` outside
            0..:data:`MAX_SEED`, unknown kind, unknown precision.

    Example:
        >>> TraceSettings(kinds="all").kinds
        ('resid', 'mlp', 'attn')
    """

    kinds: str | Sequence[str] = KINDS
    samples: int = 10
    noise: float = 3.0
    noise_std: float | None = None
    window: int = 10
    seed: int = 0
    answer: str | None = None
    precision: str = "auto"

    def __post_init__(self) -> None:
        kinds = check_settings(self.samples, self.window, self.noise, self.kinds)
        # Bounded above too: a huge count is refused here, not by the out-of-memory killer.
        whole("samples", self.samples, low=1, high=MAX_SAMPLES)
        whole("window", self.window, low=1, high=MAX_WINDOW)
        number("noise", self.noise, low=0, high=MAX_NOISE)
        whole("seed", self.seed, low=0, high=MAX_SEED)
        check_precision(self.precision)
        # Frozen: normalised values are set once, here.
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "noise", float(self.noise))

    @classmethod
    def of(cls, settings: TraceSettings | None = None, **overrides: Any) -> TraceSettings:
        """``settings`` (default: the defaults) with some fields replaced.

        Example:
            >>> TraceSettings.of(None, samples=3) == TraceSettings(samples=3)
            True
        """
        if settings is None:
            return cls(**overrides)
        return dataclasses.replace(settings, **overrides) if overrides else settings

    def key(self, model: Model, fact: Fact | tuple[str, str] | str, subject: str | None = None) -> str:
        """The trace cache's key: the weights, prompt, subject and these settings, hashed.

        Example:
            >>> a, b = TraceSettings(kinds=["mlp", "attn"]), TraceSettings(kinds=("attn", "mlp"))
            >>> a.key(model, fact) == b.key(model, fact)  # doctest: +SKIP
            True
        """
        prompt, subject, _ = prompt_and_subject(fact, subject)
        what = {
            "fingerprint": model.fingerprint, "prompt": prompt, "subject": subject, "answer": self.answer,
            "kinds": sorted(self.kinds), "samples": int(self.samples), "noise": float(self.noise),
            "window": int(self.window), "seed": int(self.seed), "precision": resolve_precision(model, self.precision),
        }
        # Only when given: the committed traces' keys (assets/traces) were made without it.
        if self.noise_std is not None:
            what["noise_std"] = float(self.noise_std)
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]
