"""What the subcommands share: the ``--model`` option, one-JSON-object output, and
:data:`LIMITS`, the declared range of every numeric option of every command (output
files are checked and written by :mod:`workbench.runtime.outputs`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """The range of one numeric option, and why it stops there (``docs/gotchas.md`` lists them).

    ``whole``: a whole number; otherwise a finite number. ``strict``: above ``low``, not at it.
    """

    low: float
    high: float
    why: str
    whole: bool = True
    strict: bool = False

    def text(self) -> str:
        # The wording of workbench.checks, which the library's refusals use.
        if self.whole:
            return f"a whole number between {self.low} and {self.high}"
        return f"a number > {self.low} and <= {self.high}" if self.strict else f"a number between {self.low} and {self.high}"


#: The most layers a model may have, for options checked before the model loads (its own
#: depth is checked once it has); negative layers count from the end.
_LAYERS = Limit(-1024, 1023, "a layer index (negative: from the end); checked against the model's depth once it loads")
#: The most tokens a top-k list may hold (workbench.checks.MAX_TOP_K).
_TOP_K = Limit(1, 1000, "past 1,000 a list is no longer read (workbench.checks.MAX_TOP_K)")

#: Every numeric option of every command: ``LIMITS[command][dest]``, checked by
#: :func:`check_limits` after parsing, before anything loads. The library calls behind them
#: declare the same upper bounds (TraceSettings, SearchParams, knowledge_neurons; EvalSettings).
#: tests/test_reliability_cli.py holds every ``type=int``/``float`` option to an entry here.
LIMITS: dict[str, dict[str, Limit]] = {
    "app": {"port": Limit(1, 65535, "a TCP port")},
    "edit": {
        "layers": _LAYERS,
        "min_prob": Limit(0, 1, "a probability", whole=False),
    },
    "evaluate": {
        "limit": Limit(1, 1_000_000, "facts; CounterFact has 21,919"),
        "every": Limit(1, 1_000_000, "facts between curve points or drift samples"),
        "batch_size": Limit(1, 10_000, "facts per edit call; MEMIT's largest published batch is 10,000"),
        "layers": _LAYERS,
        "perplexity_texts": Limit(1, 1000, "held-out texts scored at every drift sample; the corpus holds 1,004"),
        "fluency_tokens": Limit(1, 1000, "tokens generated per fluency prompt (generate's own bound)"),
        "time_limit": Limit(0, 2_592_000, "seconds; at most 30 days", whole=False, strict=True),
        "workers": Limit(1, 256, "Ray workers, each holding its own copy of the model"),
    },
    "knockout": {"window": Limit(1, 1024, "layers blocked around each layer (clipped to the model's depth)")},
    "lens": {"top_k": _TOP_K},
    "memories": {
        "layer": _LAYERS,
        "position": Limit(-256, 255, "a token position (negative: from the end); prompts hold at most 256 tokens"),
        "top_k": _TOP_K,
    },
    "neurons": {
        "layers": _LAYERS,
        "steps": Limit(1, 1000, "integration steps, all in one batch (Dai et al. use 20); as the KN editor's steps"),
        "threshold": Limit(0, 1, "a fraction of the largest attribution", whole=False, strict=True),
        "share": Limit(0, 1, "a fraction of the prompts", whole=False, strict=True),
    },
    "probe": {"top_k": Limit(0, 1000, _TOP_K.why)},
    "trace": {
        "samples": Limit(1, 100, "noisy copies in one batch, back-propagated at once by attribution; ROME uses 10"),
        "noise": Limit(0, 100, "subject-embedding stds (ROME uses 3); far past the subject's own scale", whole=False),
        "window": Limit(1, 1024, "layers restored around each layer (clipped to the model's depth)"),
        "seed": Limit(0, 2**63 - 1, "a 64-bit seed for the noise generator"),
    },
}


def check_value(command: str, dest: str, value):
    """``value`` checked against ``LIMITS[command][dest]`` (a list: each item); returns it.

    Raises:
        WorkbenchError: one line with the option, its range, why, and what was given.
    """
    from workbench.errors import WorkbenchError

    limit = LIMITS[command][dest]
    for item in value if isinstance(value, (list, tuple)) else [value]:
        ok = isinstance(item, (int, float)) and not isinstance(item, bool)
        if ok and limit.whole:
            ok = isinstance(item, int)
        if ok:
            ok = math.isfinite(item) and (item > limit.low if limit.strict else item >= limit.low) and item <= limit.high
        if not ok:
            raise WorkbenchError(f"--{dest.replace('_', '-')} must be {limit.text()} ({limit.why}), got {item!r} "
                                 "(nothing was run)")
    return value


def check_limits(args: argparse.Namespace) -> None:
    """Check every numeric option ``args`` holds against :data:`LIMITS` (strings such as
    ``--workers auto`` or ``--layers 5,6`` are checked by their command once parsed)."""
    for dest in LIMITS.get(args.command, {}):
        value = getattr(args, dest, None)
        if value is None or isinstance(value, str):
            continue
        check_value(args.command, dest, value)


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    from workbench.core.loading import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or path (default {DEFAULT_MODEL})")


def json_text(obj, **kwargs) -> str:
    """``obj`` as strict JSON; NaN or infinity (which JSON has no words for) is an error.

    Raises:
        WorkbenchError: the result holds a non-finite number (corrupt weights, or an
            edit that broke the model), so a JSON reader would choke on it.
    """
    from workbench.errors import WorkbenchError

    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:
        raise WorkbenchError(
            "the result holds NaN or infinity, which is not valid JSON: the model's outputs are not finite "
            "(corrupt weights, or an edit that broke it)"
        ) from None


def emit_json(obj) -> None:
    """Print exactly one JSON object on stdout (strict JSON: see :func:`json_text`)."""
    sys.stdout.write(json_text(obj) + "\n")


def parse_workers(text: str) -> int | str:
    """``--workers``: a positive integer or ``auto``, checked (Ray installed) before the model loads."""
    from workbench.runtime.cluster import check_workers
    from workbench.errors import WorkbenchError

    text = str(text).strip().lower()
    if text == "auto":
        return check_workers("auto")
    if not text.isdigit() or int(text) < 1:
        raise WorkbenchError(f"--workers must be a positive integer or 'auto', got {text!r}")
    return check_workers(check_value("evaluate", "workers", int(text)))
