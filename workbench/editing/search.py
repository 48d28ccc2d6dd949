"""The target-search settings of the locate-then-edit methods, and each method's defaults.

ROME, MEMIT and PMET (and the editors built on them) all search for vectors that,
added at a site of the model, make it say the new object
(:func:`~workbench.editing.optimize.optimize_deltas`). :class:`SearchParams` holds
that search's settings; a method's own defaults, where they differ from the shared ones, are
in its record (``register_method(..., search_defaults=...)``). A method takes the settings as plain
keywords (``wb.edit(model, fact, method="rome", steps=10)``) and builds them with
:meth:`SearchParams.from_kwargs`, which rejects a name it does not know.

Example:
    >>> SearchParams.from_kwargs({"steps": 10}, method="rome").steps
    10
    >>> SearchParams.for_method("rome").n_prefixes, SearchParams.for_method("memit").n_prefixes
    (5, 10)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from workbench.checks import number, whole
from workbench.errors import WorkbenchError


#: The most Adam steps a target search takes: a search that has not met ``stop_nll`` in
#: 1,000 steps (ROME's default is 25; one step is about 0.1 s on 2 CPU cores) will not.
MAX_STEPS = 1000


@dataclass(frozen=True)
class SearchParams:
    """Settings of the target (v*) search, shared by ROME, MEMIT and PMET.

    Attributes:
        steps: Adam steps at most (the first measures the unedited model).
        lr, beta1: Adam's learning rate and first-moment decay.
        kl_weight: weight of KL(edited ‖ unedited) after "{subject} is a".
        weight_decay: weight of ‖δ‖²/‖init‖².
        clamp: ‖δ‖ is kept below ``clamp`` · ‖init‖.
        stop_nll: stop once the new object's NLL is below this.
        n_prefixes: generated context prefixes put before the edit prompt (each is a
            row of every step, so they cost time); MEMIT and PMET read their keys
            over the same prefixes.
        mixed_unembed, low_precision: the two bfloat16 speed-ups (see below).
    """

    steps: int = 25
    # lr 0.1, not ROME's 0.5 (tuned for GPT-2 XL): Adam moves every coordinate by about
    # lr per step, and the FFN-output δs that work on gemma-3-270m are small per coordinate
    # (docs/results.md, "Why the search's defaults").
    lr: float = 0.1
    # Adam's first-moment decay (its momentum); ROME's record sets its own.
    beta1: float = 0.9
    kl_weight: float = 0.0625
    weight_decay: float = 0.5
    clamp: float = 4.0
    stop_nll: float = 0.05
    # MEMIT's and PMET's; ROME's record sets its own.
    n_prefixes: int = 10
    # Unembed in bfloat16 with the target and top tokens exact (see workbench/runtime/unembed.py):
    # the 262k-row unembedding is much of a step's cost. False runs the plain float32 unembedding.
    mixed_unembed: bool = True
    # Run the blocks from the edited layer up in bfloat16 during the steps, where the CPU does
    # bfloat16 natively (lowp.py); stopping is decided in float32, so an edit's NLL is a float32
    # number. False (or a GPU, or a CPU without bfloat16) runs float32 throughout. "auto": only
    # where the committed comparison for this model says the edits agree with float32's
    # (search_in_bfloat16); on gemma-3-270m they did not, so it searches in float32.
    low_precision: bool | str = "auto"

    @classmethod
    def names(cls) -> list[str]:
        """The settings' keyword names."""
        return [f.name for f in fields(cls)]

    @classmethod
    def for_method(cls, method: str) -> SearchParams:
        """The defaults ``method`` searches with (the shared ones where it sets none)."""
        return cls(**method_search_defaults(method))

    @classmethod
    def from_kwargs(cls, kwargs: dict, *, method: str) -> SearchParams:
        """Build from a method's remaining keyword arguments; unknown names are an error.

        A method's own defaults (its record's ``search_defaults``) apply where the caller gives none.

        Raises:
            WorkbenchError: a name that is not a search setting (the message lists them).
        """
        known = cls.names()
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise WorkbenchError(
                f"unknown hyperparameter(s) for {method}: {', '.join(unknown)} "
                f"(the target search takes {', '.join(known)}; see help(wb.edit) for the method's own)"
            )
        return cls(**{**method_search_defaults(method), **kwargs})

    def to_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        # Every setting checked here, once, for every method that searches.
        whole("steps", self.steps)
        if self.steps < 1:
            raise WorkbenchError(f"steps must be at least 1 (the first step measures the unedited model), got {self.steps}")
        if self.steps > MAX_STEPS:  # 10**12 ran past 10 minutes, unrefused
            raise WorkbenchError(f"steps must be at most {MAX_STEPS} (a search that has not converged by then "
                                 f"will not), got {self.steps}")
        number("lr", self.lr, low=0, strict=True)
        number("beta1", self.beta1)
        if not 0 <= self.beta1 < 1:
            raise WorkbenchError(f"beta1 (Adam's momentum) must be in [0, 1), got {self.beta1}")
        number("kl_weight", self.kl_weight, low=0)
        number("weight_decay", self.weight_decay, low=0)
        number("clamp", self.clamp, low=0, strict=True)
        number("stop_nll", self.stop_nll, low=0)
        whole("n_prefixes", self.n_prefixes, low=0, high=100)
        if not isinstance(self.mixed_unembed, bool):
            raise WorkbenchError(f"mixed_unembed must be True or False, got {self.mixed_unembed!r}")
        if not isinstance(self.low_precision, bool) and self.low_precision != "auto":
            raise WorkbenchError(f"low_precision must be True, False or 'auto', got {self.low_precision!r}")


#: The share of facts whose verdicts must equal the float32 search's for "auto" to take bfloat16.
FLIPS_BOUND = 0.99
#: What ``benchmarks/bf16_search.py`` measured: per model, the bfloat16 search's agreement.
BF16_SEARCH_MEASURED = Path(__file__).resolve().parents[2] / "assets" / "results" / "bf16_search.json"


def measured_agreement(model_name: str) -> float | None:
    """The committed share of facts whose edits' verdicts equal float32's (None: never measured)."""
    try:
        data = json.loads(BF16_SEARCH_MEASURED.read_text())
        return float(data["models"][model_name]["fact_agreement"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def search_in_bfloat16(model, params: SearchParams) -> bool:
    """Whether the search's steps run the blocks in bfloat16 here.

    Never where bfloat16 is not native (``lowp.usable``). ``low_precision=True`` asks for it;
    ``"auto"`` takes it only where the committed comparison for this model found the same
    verdicts as the float32 search on at least :data:`FLIPS_BOUND` of the facts (gemma-3-270m:
    183 of 199, 92 %, so float32).

    Example:
        >>> search_in_bfloat16(model, SearchParams())   # on gemma-3-270m      # doctest: +SKIP
        False
    """
    from workbench.runtime.lowp import usable

    if params.low_precision is False or not usable(model):
        return False
    if params.low_precision is True:
        return True
    agreement = measured_agreement(str(model.name))
    return agreement is not None and agreement >= FLIPS_BOUND


def method_search_defaults(method: str) -> dict:
    """The search settings where ``method``'s record differs from the shared defaults ({} if none).

    Example:
        >>> method_search_defaults("rome")["beta1"]
        0.5
    """
    return dict(_RECORDED.get(method, {}))


#: method -> its record's ``search_defaults``, filled by ``register_method`` (the record is where a
#: method declares them; this copy lets the search read them without importing the registry).
_RECORDED: dict[str, dict] = {}
