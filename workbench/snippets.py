"""Runnable code that reproduces a library call: the app's "Copy as code".

An action of the app is a :class:`Call` -- the public function it called and the
arguments it passed, recorded when it ran -- and :func:`snippet` writes it out as a
notebook cell: ``import workbench as wb``, the model, each fact as ``wb.Fact(...)``,
the edits applied before it, then the call, with only the arguments that differ from
the function's defaults spelled out (strings with ``repr``, so quotes are safe).

Example:
    >>> from workbench.facts import Fact
    >>> from workbench.probing import probe
    >>> fact = Fact("Eiffel Tower", "The {} is located in the city of", "Paris", "Rome")
    >>> print(snippet(Call(probe, (Code("fact.text"),), {"targets": ["Paris"], "top_k": 5}),
    ...               model="gemma-3-270m", facts=[fact]), end="")
    import workbench as wb
    <BLANKLINE>
    model = wb.load_model('gemma-3-270m')
    fact = wb.Fact('Eiffel Tower', 'The {} is located in the city of', 'Paris', 'Rome')
    <BLANKLINE>
    result = wb.probe(model, fact.text, targets=['Paris'])
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench.facts import Fact, Implication

#: Where a wrapped call's arguments start, and how long a line may grow before it wraps.
INDENT = "    "
WIDTH = 100
#: The fields of a fact every snippet spells out (when set); the prompt lists follow where a call reads them.
CORE_FIELDS = ("subject", "prompt", "target_true", "target_new")


class Code(str):
    """A piece of Python written as is, not as a literal (``Code("fact.text")``)."""


@dataclass(frozen=True)
class Call:
    """One call of a public function, as the app made it.

    Attributes:
        fn: the function (``workbench.trace``); written ``wb.<name>`` when ``public``, else
            imported from its module.
        args: the positional arguments after the model (a :class:`~workbench.facts.Fact`
            becomes the variable its ``wb.Fact(...)`` line defines).
        kwargs: the keyword arguments as passed (``cancel`` and callbacks left out by the caller).
        defaults: defaults of keywords the signature passes on (``trace(**overrides)`` to
            its settings); an argument equal to its default is not written.
        keep: keywords written even at their default (``method=`` of an edit).
        fact_fields: the optional fields of the facts this call reads (``paraphrase_prompts``,
            ...); None: all of them.
        result: the variable the result goes to ("" for none).
        model: whether the model is the first argument.
        within: a context manager the call runs inside (``Code("wb.unedited(model)")``).
        public: whether ``wb.<name>`` reaches ``fn``.
        comment: a line said above the call.
    """

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    keep: tuple[str, ...] = ()
    fact_fields: tuple[str, ...] | None = ()
    result: str = "result"
    model: bool = True
    within: Code | None = None
    public: bool = True
    comment: str = ""


def defaults_of(fn: Callable[..., Any] | type) -> dict[str, Any]:
    """The keyword defaults of a function, or the field defaults of a dataclass.

    Example:
        >>> defaults_of(lambda model, *, top_k=5, seed=0: None)
        {'top_k': 5, 'seed': 0}
    """
    if dataclasses.is_dataclass(fn):
        return {f.name: f.default for f in dataclasses.fields(fn) if f.default is not dataclasses.MISSING}
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _same(a: Any, b: Any) -> bool:
    """Whether a value equals a default (a list equals a tuple of the same items; 1 is not True)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) != isinstance(b, bool) or (a is None) != (b is None):
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - arrays and the like: never a default
        return False


def literal(value: Any, names: Mapping[int, str] | None = None) -> str:
    """``value`` as Python source: ``repr`` of strings and numbers, containers item by item,
    a :class:`Code` as written, a fact as the name ``names`` gives it.

    Example:
        >>> literal({"layers": (4, 5), "name": "it's"})
        '{\\'layers\\': (4, 5), \\'name\\': "it\\'s"}'
    """
    names = names or {}
    if isinstance(value, Code):
        return str(value)
    if isinstance(value, Fact) and id(value) in names:
        return names[id(value)]
    if isinstance(value, Implication):
        return f"wb.Implication({literal(value.prompt)}, {literal(value.target)})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, (str, bool, int, float)) or value is None:
        return repr(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a numpy or torch scalar
        return repr(value.item())
    if isinstance(value, tuple):
        inner = ", ".join(literal(v, names) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v, names) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{literal(k, names)}: {literal(v, names)}" for k, v in value.items()) + "}"
    if isinstance(value, Fact):
        return fact_code(value)
    raise TypeError(f"cannot write a {type(value).__name__} as code")


def fact_code(fact: Fact, fields: Sequence[str] | None = None) -> str:
    """``wb.Fact(...)`` for ``fact``: subject, prompt and objects, and of the other fields those in
    ``fields`` (None: every field that is set).

    Example:
        >>> fact_code(Fact("Eiffel Tower", "The {} is in", "Paris", paraphrase_prompts=["It is in"]), fields=())
        "wb.Fact('Eiffel Tower', 'The {} is in', 'Paris')"
    """
    core = [fact.subject, fact.prompt, fact.target_true, fact.target_new]
    while core and core[-1] is None:
        core.pop()
    parts = [literal(v) for v in core]
    if fact.target_true is None and fact.target_new is not None:
        parts = [literal(fact.subject), literal(fact.prompt), f"target_new={literal(fact.target_new)}"]
    for f in dataclasses.fields(fact):
        if f.name in CORE_FIELDS or (fields is not None and f.name not in fields):
            continue
        value = getattr(fact, f.name)
        if value not in (None, (), []):
            parts.append(f"{f.name}={literal(value)}")
    return _wrap("wb.Fact(", parts, ")")


def _wrap(head: str, parts: list[str], tail: str, indent: str = "") -> str:
    """``head`` + the parts joined by commas + ``tail``, one part a line when the line would be long."""
    flat = indent + head + ", ".join(parts) + tail
    if len(flat) <= WIDTH and "\n" not in flat:
        return flat[len(indent):]
    inner = indent + INDENT
    return head + "\n" + "".join(f"{inner}{p},\n" for p in parts) + indent + tail


def assign(name: str, value: Any) -> Code:
    """``name = value`` as code, a list or tuple one item a line when it is long.

    Example:
        >>> assign("prompts", ["The Louvre is in", "Big Ben is in"])
        "prompts = ['The Louvre is in', 'Big Ben is in']"
    """
    if isinstance(value, list):
        return Code(f"{name} = " + _wrap("[", [literal(v) for v in value], "]"))
    return Code(f"{name} = {literal(value)}")


def _arguments(call: Call, names: Mapping[int, str]) -> list[str]:
    defaults = {**defaults_of(call.fn), **call.defaults}
    parts = ["model"] if call.model else []
    parts += [literal(a, names) for a in call.args]
    for key, value in call.kwargs.items():
        if key in call.keep or key not in defaults or not _same(value, defaults[key]):
            parts.append(f"{key}={literal(value, names)}")
    return parts


def call_code(call: Call, names: Mapping[int, str] | None = None) -> str:
    """The lines of one call (its ``with`` block and comment included)."""
    names = names or {}
    indent = INDENT if call.within is not None else ""
    name = f"wb.{call.fn.__name__}" if call.public else call.fn.__name__
    target = f"{call.result} = " if call.result else ""
    line = indent + _wrap(target + name + "(", _arguments(call, names), ")", indent)
    lines = [f"# {call.comment}"] if call.comment else []
    if call.within is not None:
        lines.append(f"with {call.within}:")
    return "\n".join(lines + [line])


def _facts_in(value: Any) -> list[Fact]:
    if isinstance(value, Fact):
        return [value]
    if isinstance(value, (list, tuple)):
        return [f for v in value for f in _facts_in(v)]
    if isinstance(value, Mapping):
        return [f for v in value.values() for f in _facts_in(v)]
    return []


def _fact_names(facts: Sequence[Fact], calls: Sequence[Call | Code],
                fields: Sequence[str] | None = ()) -> tuple[dict[int, str], list[str]]:
    """A variable per distinct fact (``fact``, ``fact_2``, ...) and the lines that define them."""
    order: list[tuple[Fact, set[str] | None]] = []

    def see(fact: Fact, fields: Sequence[str] | None) -> None:
        for i, (known, used) in enumerate(order):
            if known == fact:
                order[i] = (known, None if used is None or fields is None else used | set(fields))
                return
        order.append((fact, None if fields is None else set(fields)))

    for fact in facts:
        see(fact, fields)
    for call in calls:
        if isinstance(call, Call):
            for fact in _facts_in([call.args, dict(call.kwargs)]):
                see(fact, call.fact_fields)
    names: dict[int, str] = {}
    lines = []
    for i, (fact, used) in enumerate(order):
        lines.append(f"{_name(i)} = " + fact_code(fact, None if used is None else sorted(used)))
    for call in calls:
        if isinstance(call, Call):
            for fact in _facts_in([call.args, dict(call.kwargs)]):
                names[id(fact)] = _name(next(i for i, (known, _) in enumerate(order) if known == fact))
    return names, lines


def _name(i: int) -> str:
    return "fact" if i == 0 else f"fact_{i + 1}"


def snippet(calls: Call | Code | Sequence[Call | Code], *, model: str, facts: Sequence[Fact] = (),
            before: Sequence[Call | Code] = (), note: str = "", fact_fields: Sequence[str] | None = ()) -> str:
    """A notebook cell that reproduces ``calls``: imports, the model, the facts, ``before``
    (e.g. the edits applied when the calls ran), then the calls.

    Args:
        calls: the calls in order (a :class:`Code` is a line written as is).
        model: the model's name, as :func:`workbench.load_model` takes it.
        facts: facts to define first (the first is named ``fact``) even where no call reads them whole.
        fact_fields: the optional fields written of ``facts`` (None: all that are set).
        before: calls made before, shown under a comment (the edits applied at the time).
        note: a comment line under the imports.
    """
    calls = [calls] if isinstance(calls, (Call, Code)) else list(calls)
    before = list(before)
    names, fact_lines = _fact_names(facts, [*calls, *before], fact_fields)
    imports = sorted({f"from {c.fn.__module__} import {c.fn.__name__}"
                      for c in [*before, *calls] if isinstance(c, Call) and not c.public})
    out = ["import workbench as wb", *imports, ""]
    if note:
        out.insert(len(imports) + 1, f"# {note}")
    out += [f"model = wb.load_model({model!r})", *fact_lines, ""]
    if before:
        out.append("# applied in the app when this ran:")
        out += [c if isinstance(c, Code) else call_code(c, names) for c in before]
        out.append("")
    out += [str(c) if isinstance(c, Code) else call_code(c, names) for c in calls]
    return "\n".join(out) + "\n"
