"""Validating settings a user types: whole numbers and finite numbers in a range, one line each.

Each check returns the value (as ``int`` or ``float``) or raises a
:class:`~workbench.errors.WorkbenchError` that names the setting, the range and
what was given — before anything is computed, so nothing has changed yet.

Example:
    >>> whole("steps", 25, low=1)
    25
    >>> number("lr", "abc", low=0, strict=True)
    Traceback (most recent call last):
    ...
    workbench.errors.WorkbenchError: lr must be a number > 0, got 'abc'
"""

from __future__ import annotations

import math
import numbers
import string
from dataclasses import dataclass

from workbench.errors import WorkbenchError

#: The most tokens a top-k list may ask for: beyond this a list is no longer read
#: by a person, and every (layer, position) of a lens would hold it.
MAX_TOP_K = 1000


#: The longest prompt the locator and the editors take, in tokens. Their cost grows with
#: every token (a trace runs tokens x layers cells; a lens reads a vocabulary-wide row per
#: token and layer), and facts are short: a 5,000-token prompt ran for minutes with no
#: word. Past this, a clear refusal beats a silent wait.
MAX_PROMPT_TOKENS = 256


#: The most prompts of one kind (paraphrases, neighbours, generation prompts, implications)
#: a fact may carry. CounterFact's records carry 2 paraphrases and 10 neighbours; every
#: prompt is scored before and after each edit, so 200,000 of them was a run that never ends.
MAX_PROMPTS_PER_KIND = 1000

#: The longest object (``target_true`` / ``target_new``) in characters. Objects are names and
#: short phrases; each target token is a scored position, and a 3,000-word object asked for
#: gigabytes before it was refused by anything.
MAX_TARGET_CHARS = 300


def _range(low, high, strict: bool) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    if low is not None:
        return f"{'>' if strict else '>='} {low}"
    return f"<= {high}" if high is not None else ""


def whole(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int if it is a whole number (not a bool, not 2.5) in ``[low, high]``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and (low is None or value >= low) and (high is None or value <= high):
        return int(value)
    raise WorkbenchError(f"{name} must be a whole number {_range(low, high, False)}".rstrip() + f", got {value!r}")


def number(name: str, value, *, low: float | None = None, high: float | None = None, strict: bool = False) -> float:
    """``value`` as a float if it is a finite real number in range (``strict``: above ``low``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (low is None or (value > low if strict else value >= low)) and (high is None or value <= high):
        return float(value)
    raise WorkbenchError(f"{name} must be a number {_range(low, high, strict)}".rstrip() + f", got {value!r}")


def top_k(value, *, name: str = "top_k", low: int = 1) -> int:
    """A top-k count: a whole number from ``low`` to :data:`MAX_TOP_K`."""
    return whole(name, value, low=low, high=MAX_TOP_K)


def prompt_length(n_tokens: int, what: str) -> None:
    """Refuse a prompt longer than :data:`MAX_PROMPT_TOKENS` for ``what`` (``"tracing"``, ...)."""
    if n_tokens > MAX_PROMPT_TOKENS:
        raise WorkbenchError(
            f"the prompt is {n_tokens} tokens long; {what} takes prompts of at most {MAX_PROMPT_TOKENS} tokens "
            "(its cost grows with every token): shorten it"
        )


def check_flag(name: str, value) -> bool:
    """A declared on/off setting: True or False, nothing else (``"no"`` would read as true)."""
    if not isinstance(value, bool):
        raise WorkbenchError(f"{name} must be True or False, got {value!r}")
    return value


@dataclass(frozen=True)
class Whole:
    """A declared setting that must be a whole number in ``[low, high]`` (see :func:`whole`)."""

    low: int | None = None
    high: int | None = None

    def __call__(self, name: str, value) -> int:
        return whole(name, value, low=self.low, high=self.high)


@dataclass(frozen=True)
class Number:
    """A declared setting that must be a finite number in range (see :func:`number`)."""

    low: float | None = None
    high: float | None = None
    strict: bool = False

    def __call__(self, name: str, value) -> float:
        return number(name, value, low=self.low, high=self.high, strict=self.strict)


def template(value, *, what: str, slot: str) -> str:
    """``value`` if it is a ``str.format`` template with exactly one ``{}`` (where ``slot`` goes).

    Other braces must be doubled (``{{``). ``what`` names the template in the message.
    """
    if not isinstance(value, str):
        raise WorkbenchError(f"{what} must be text, got {type(value).__name__}")
    hint = f"use '{{}}' exactly once where {slot} goes (double other braces: '{{{{')"
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:  # a lone "{" or "}"
        raise WorkbenchError(f"{what} is malformed ({exc}): {hint}, got {value!r}") from None
    for name, spec, conv in fields:
        if name or spec or conv:
            field = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise WorkbenchError(f"{what} has a field {field}: {hint}, got {value!r}")
    if len(fields) != 1:
        raise WorkbenchError(f"{what} has {len(fields)} '{{}}' fields: {hint}, got {value!r}")
    return value
