"""What a causal trace or an activation-patching sweep returns: :class:`TraceResult`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workbench.results import Result


@dataclass
class TraceResult(Result):
    """Scores of a causal trace or an activation-patching sweep.

    Attributes:
        model: model name.
        prompt: the prompt as traced (subject filled in).
        subject: the corrupted subject (trace) or a description of the corrupt prompt (patch).
        tokens: the prompt's tokens as text, one per row of the score grids.
        subject_range: ``[start, end)`` token positions of the subject (the corrupted span).
        answer: the model's clean top-1 next token; scores are its probability.
        answer_id: its token id.
        clean_prob: p(answer) on the clean prompt.
        corrupted_prob: p(answer) with noise on the subject (mean over copies), or on the
            corrupt prompt for :func:`~workbench.locate.patching.patch`.
        scores: ``{kind: [tokens, layers]}`` p(answer) after restoring that cell.
        method: ``"trace"`` or ``"patch"``.
        samples, noise, noise_std, window, seed: the settings used.
        seconds: wall time.
        precision: ``"float32"`` or ``"bfloat16"`` (the restored runs' arithmetic).
        warnings: things that make the result less trustworthy.
    """

    model: str
    prompt: str
    subject: str
    tokens: list[str]
    subject_range: list[int]
    answer: str
    answer_id: int
    clean_prob: float
    corrupted_prob: float
    scores: dict[str, np.ndarray]
    method: str = "trace"
    samples: int = 0
    noise: float = 0.0
    noise_std: float = 0.0
    window: int = 0
    seed: int = 0
    seconds: float = 0.0
    precision: str = "float32"
    warnings: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return list(self.scores)

    @property
    def n_layers(self) -> int:
        return int(next(iter(self.scores.values())).shape[1]) if self.scores else 0

    @property
    def indirect_effects(self) -> dict[str, np.ndarray]:
        """``{kind: [tokens, layers]}`` score minus the corrupted probability."""
        return {k: np.asarray(v) - self.corrupted_prob for k, v in self.scores.items()}

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["indirect_effects"] = {k: v.tolist() for k, v in self.indirect_effects.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TraceResult:
        """Rebuild a result from :meth:`to_dict` output (e.g. a saved JSON file)."""
        kwargs = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        kwargs["scores"] = {k: np.asarray(v, dtype=float) for k, v in d["scores"].items()}
        return cls(**kwargs)

    def to_pandas(self):
        """Long format: one row per (token, layer, kind)."""
        import pandas as pd

        start, end = self.subject_range
        rows = []
        for kind, grid in self.scores.items():
            grid = np.asarray(grid)
            for t, token in enumerate(self.tokens):
                for layer in range(grid.shape[1]):
                    rows.append({
                        "position": t, "token": token, "subject": start <= t < end, "layer": layer,
                        "kind": kind, "score": float(grid[t, layer]),
                        "indirect_effect": float(grid[t, layer] - self.corrupted_prob),
                    })
        return pd.DataFrame(rows)
