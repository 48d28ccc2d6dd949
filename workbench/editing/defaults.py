"""Default layers per editing method and model, chosen from a measured sweep.

``benchmarks/layer_sweep.py`` edits known facts with ROME at every layer and
writes ``assets/sweeps/<model>_rome.json``; :func:`default_layers` picks the
layer with the best score there (ties go to the layer nearest the middle).
MEMIT and PMET use a window of layers ending at that layer. Without a sweep
for the model, a rule of thumb stands in (a quarter of the way up; ROME's own choices were
0.18 (GPT-J) to 0.35 (GPT-2 XL) of the depth), and
``default_layers`` says so in ``source``.

Example:
    >>> default_layers(model, "rome")            # doctest: +SKIP
    [4]
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.core.model import Model

SWEEPS = Path(__file__).resolve().parent.parent.parent / "assets" / "sweeps"
#: How many consecutive layers MEMIT/PMET spread an edit over.
WINDOW = 5


def _model_key(model: Model) -> str:
    return str(model.name).replace("/", "_")


def sweep_path(model: Model) -> Path:
    return SWEEPS / f"{_model_key(model)}_rome.json"


def sweep_score(row: dict) -> float:
    """One number per layer: the mean of efficacy, paraphrase and neighbourhood.

    A layer that flips the edit prompt but wrecks the neighbours is not "best".
    """
    return (row["efficacy"] + row["paraphrase"] + row["neighborhood"]) / 3.0


def best_rome_layer(model: Model) -> tuple[int, str]:
    """(layer, source): the best layer of the model's ROME sweep, or a rule of thumb."""
    path = sweep_path(model)
    n = model.n_layers
    if path.exists():
        try:
            rows = json.loads(path.read_text())["layers"]
            scored = [(sweep_score(r), int(r["layer"])) for r in rows]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise WorkbenchError(f"layer sweep {str(path)!r} is unreadable ({exc}); rerun benchmarks/layer_sweep.py") from None
        top = max(s for s, _ in scored)
        # Ties (within measurement noise of a few facts) go to the layer nearest the middle.
        tied = [l for s, l in scored if s >= top - 1e-9]
        layer = min(tied, key=lambda l: abs(l - (n - 1) / 2))
        return layer, str(path.name)
    return n // 4, "rule of thumb (no sweep for this model): a quarter of the way up"


def default_layers(model: Model, method: str) -> list[int]:
    """The layers ``method`` edits by default on ``model`` (its record's layer rule).

    Raises:
        WorkbenchError: the method edits no layer (it changes no weights at a layer).
    """
    from workbench.editing.registry import method_spec

    layers = method_spec(method).default_layers(model)
    if layers is None:
        raise WorkbenchError(f"no default layers for method {method!r}: it edits no layer")
    return layers


def rome_layers(model: Model) -> list[int]:
    """One layer: the best of the model's ROME sweep (the rule of ROME, EMMET, KN and FT)."""
    return [best_rome_layer(model)[0]]


def window_layers(model: Model) -> list[int]:
    """:data:`WINDOW` consecutive layers ending at the best ROME layer (MEMIT, PMET, AlphaEdit)."""
    last = best_rome_layer(model)[0]
    return list(range(max(0, last - WINDOW + 1), last + 1))


def upper_half_layers(model: Model) -> list[int]:
    """The upper half of the model: where knowledge neurons are searched (KN)."""
    return list(range(model.n_layers // 2, model.n_layers))


def memory_layers(model: Model) -> list[int]:
    """One layer, :func:`memory_layer` (GRACE and WISE)."""
    return [memory_layer(model)]


def memory_layer(model: Model) -> int:
    """The layer GRACE and WISE keep their memory at by default: two thirds of the way up.

    They read a key at every position and answer with an FFN output there, so a late FFN,
    where an output maps straight to the next token, is the natural place (the papers edit
    late layers too). On gemma-3-270m it is 12 of 18 (``grace.distance_sweep`` at layers
    6, 9 and 12 shows the same overlap of paraphrase and neighbour distances at each).
    """
    return (2 * model.n_layers) // 3


def single_layer(model: Model, layers, method: str, *, hint: str = "") -> int:
    """The one layer a single-layer method edits: ``layers`` or the method's default.

    Raises:
        WorkbenchError: more or fewer than one layer given, or one out of range.
    """
    layers = list(layers) if layers is not None else default_layers(model, method)
    if len(layers) != 1:
        raise WorkbenchError(f"{method} edits exactly one layer, got {layers}{hint}")
    return model.layer_index(int(layers[0]))
