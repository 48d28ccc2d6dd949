"""Reading a JSON file a user handed over: bounded in size and depth, one-line errors.

A dataset, a report to resume from, or a saved edit's metadata may be anything: a
device such as ``/dev/zero`` (read for ever, then ``MemoryError``), a file of
gigabytes, or ``[[[[...]]]]`` nested 100,000 deep (``RecursionError`` in the parser
or in any code that walks it). :func:`read_json` refuses each before it costs
memory or ends in a traceback, and names the file and the limit.

Example:
    >>> read_json("assets/known_facts.json", "dataset")[0]["subject"]   # doctest: +SKIP
    'Vinson Massif'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

#: The largest JSON file read whole. All of CounterFact (21,919 records) is about 40 MB in
#: ROME's format; four times that leaves room without letting a stray device or dump through.
MAX_JSON_BYTES = 256 * 1024 * 1024

#: The deepest nesting accepted. Datasets, reports and edit metadata nest a handful of
#: levels; Python's parser and any recursive reader fail somewhere near a thousand.
MAX_JSON_DEPTH = 64


class NotText(WorkbenchError):
    """The file is not UTF-8 text (a reader may call that "corrupt" in its own words)."""


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), without recursion.

    Example:
        >>> json_depth({"a": [1, [2]]}), json_depth(3)
        (3, 0)
    """
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:  # deep enough to refuse: no need to walk the rest
            return depth
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_depth(value: Any, what: str) -> Any:
    """``value`` if it nests at most :data:`MAX_JSON_DEPTH` deep; else a one-line error naming ``what``."""
    depth = json_depth(value)
    if depth > MAX_JSON_DEPTH:
        raise WorkbenchError(f"{what} nests lists or objects more than {MAX_JSON_DEPTH} levels deep; "
                             "it is not a file the workbench wrote or reads")
    return value


def read_text_bounded(path: str | Path, what: str, *, max_bytes: int = MAX_JSON_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` bytes, or a one-line error.

    Example:
        >>> read_text_bounded("/dev/zero", "dataset")
        Traceback (most recent call last):
        ...
        workbench.errors.WorkbenchError: dataset '/dev/zero' is not a regular file (a device, a pipe or a folder)
    """
    path = Path(path)
    try:
        if not path.is_file():
            if not path.exists():
                raise WorkbenchError(f"cannot read {what} {str(path)!r}: no such file")
            raise WorkbenchError(f"{what} {str(path)!r} is not a regular file (a device, a pipe or a folder)")
        size = path.stat().st_size
        if size > max_bytes:
            raise WorkbenchError(f"{what} {str(path)!r} is {size / 2**20:.0f} MiB; files of at most "
                                 f"{max_bytes / 2**20:.0f} MiB are read (split it, or pass --limit on a smaller file)")
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)  # a file that grows while read is still bounded
    except OSError as exc:
        raise WorkbenchError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise WorkbenchError(f"{what} {str(path)!r} grew past {max_bytes / 2**20:.0f} MiB while it was read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotText(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start} is "
                      f"{data[exc.start:exc.start + 1]!r})") from None


def loads(text: str, what: str) -> Any:
    """``json.loads`` with the parser's own recursion limit and the depth limit as one-line errors.

    Raises ``json.JSONDecodeError`` unchanged for text that is not JSON (callers try JSON lines).
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise WorkbenchError(f"{what} nests lists or objects too deeply to read "
                             f"(at most {MAX_JSON_DEPTH} levels are accepted)") from None
    return check_depth(value, what)


def read_json(path: str | Path, what: str, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A bounded JSON file's value (see the module's docstring); every failure is one line naming ``what``."""
    text = read_text_bounded(path, what, max_bytes=max_bytes)
    try:
        return loads(text, f"{what} {str(path)!r}")
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"{what} {str(path)!r} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
