"""The panels' shared widgets and parsers: the inline error line, HTML tables, and the
readers of what a user types into a text field (layer lists, ``key=value`` lines,
``prompt → target`` lines), plus number fields that say when they clamp.

Nothing here holds state or calls the model (that is :mod:`workbench.ui.state`).
"""

from __future__ import annotations

import html
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets

from workbench.errors import WorkbenchError
from workbench.runtime.progress import Cancelled


def sentence(exc: BaseException) -> str:
    """One sentence for the user; never a traceback."""
    if isinstance(exc, Cancelled):
        return "Cancelled."
    if isinstance(exc, WorkbenchError):
        text = str(exc)
    else:
        # An unexpected failure still reads as a sentence; the traceback goes to the log.
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        text = "something went wrong (" + text.splitlines()[0] + ")"
    text = text.strip() or "something went wrong"
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?", ")")) else text + "."


class ErrorLine(widgets.HTML):
    """An inline message line: empty when all is well, a sentence otherwise."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_class("wb-error")
        self.last_exception: BaseException | None = None

    def show(self, exc_or_text: BaseException | str) -> None:
        if isinstance(exc_or_text, BaseException):
            self.last_exception = exc_or_text
            if not isinstance(exc_or_text, WorkbenchError):
                traceback.print_exception(exc_or_text)  # the log, not the panel
            text = sentence(exc_or_text)
        else:
            text = exc_or_text
        self.value = f'<span style="color:#b00020">{html.escape(text)}</span>'

    def note(self, text: str) -> None:
        self.value = f'<span class="wb-note" style="color:#555">{html.escape(text)}</span>'

    def clear(self) -> None:
        self.value = ""
        self.last_exception = None

    @property
    def text(self) -> str:
        """The message without markup (for tests)."""
        import re

        return html.unescape(re.sub(r"<[^>]+>", "", self.value))


def split_arrow(line: str) -> tuple[str, str | None]:
    """``"prompt → target"`` (or ``->``) → ``(prompt, target)``; a line without an arrow → ``(line, None)``.

    Example:
        >>> split_arrow(" The Louvre is in the city of -> Paris "), split_arrow("Paris is")
        (('The Louvre is in the city of', 'Paris'), ('Paris is', None))
    """
    line = line.strip()
    for arrow in ("→", "->"):
        if arrow in line:
            prompt, target = (part.strip() for part in line.rsplit(arrow, 1))
            return prompt, target
    return line, None


def guarded(error: ErrorLine, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a widget callback so that any exception becomes an inline sentence."""

    def call(*args, **kwargs):
        try:
            error.clear()
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            error.show(exc)
            return None

    return call


def table(rows: Sequence[dict], columns: Sequence[str], *, css: str = "wb-table",
          row_styles: Sequence[str] | None = None, formats: dict[str, str] | None = None,
          headers: dict[str, str] | None = None) -> str:
    """An HTML table (escaped) with optional per-row inline styles."""
    formats = formats or {}
    headers = headers or {}
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(headers.get(c, c))}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        style = row_styles[i] if row_styles else ""
        cells = []
        for c in columns:
            v = row.get(c, "")
            if v is None:
                v = ""
            elif c in formats and isinstance(v, (int, float)):
                v = format(v, formats[c])
            cells.append(f"<td style='padding:2px 8px'>{html.escape(str(v))}</td>")
        body.append(f"<tr class='wb-row' style='{style}'>{''.join(cells)}</tr>")
    return (f"<table class='{css}' style='border-collapse:collapse;font-size:12px'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def parse_ints(text: str, *, what: str = "layers") -> list[int] | None:
    """``"5"``, ``"4, 5, 6"`` or ``"4-6"`` → a list; empty → None."""
    text = (text or "").strip()
    if not text:
        return None
    out: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, None)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except (TypeError, ValueError):
            raise WorkbenchError(f"{what} must be integers like '5' or '4,5,6' or '4-6', got {text!r}") from None
    return out


def parse_hparams(text: str) -> dict[str, Any]:
    """``key=value`` lines (or JSON) → a dict; values read as JSON where they parse."""
    import json

    from workbench.runtime.jsonfiles import loads

    text = (text or "").strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = loads(text, "the hyperparameters")
        except json.JSONDecodeError as exc:
            raise WorkbenchError(f"hyperparameters are not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise WorkbenchError("hyperparameters must be a JSON object or key=value lines")
        return value
    out: dict[str, Any] = {}
    for line in text.replace(",", "\n").splitlines():
        line = line.strip()
        if not line:
            continue
        if "=" not in line:
            raise WorkbenchError(f"hyperparameter line {line!r} is not key=value")
        key, value = (s.strip() for s in line.split("=", 1))
        try:
            out[key] = loads(value, f"hyperparameter {key!r}")
        except json.JSONDecodeError:
            out[key] = value
    return out



#: How a whitespace character of a token is drawn, so that a token of spaces or newlines is seen.
MARKS = {" ": "⎵", "\n": "↵", "\t": "⇥", "\r": "␍"}


def visible(token: str) -> str:
    """A token as the UI prints it: whitespace-only tokens drawn with marks (⎵ ↵ ⇥), newlines
    and tabs inside a token too (an HTML cell shows them as nothing), the empty token as ∅.

    Example:
        >>> visible(" "), visible("\\n\\n"), visible(" Paris"), visible("a\\nb"), visible("")
        ('⎵', '↵↵', ' Paris', 'a↵b', '∅')
    """
    if not token:
        return "∅"
    if token.strip():
        return token.replace("\n", MARKS["\n"]).replace("\t", MARKS["\t"]).replace("\r", MARKS["\r"])
    return "".join(MARKS.get(c, MARKS[" "]) for c in token)


def quoted(token: str) -> str:
    """A token in quotes, as :func:`visible` draws it (where the UI printed ``repr(token)``).

    Example:
        >>> quoted(" "), quoted(" Paris")
        ("'⎵'", "' Paris'")
    """
    return "'" + visible(token) + "'"


#: Widget style that gives a description the room it needs (the default cuts it at ~80 px).
WIDE = {"description_width": "initial"}


class _Clamped:
    """A number field that clamps to ``[lo, hi]`` and says so in :attr:`note` (a bounded
    ipywidgets field clamps silently, and the field and the run then disagree unseen)."""

    def _clamp_setup(self, lo, hi) -> None:
        self.lo, self.hi = lo, hi
        self.note = widgets.HTML()
        self.note.add_class("wb-clamp-note")
        self._clamping = False
        self.observe(self._clamp, "value")
        self._clamp({"new": self.value})

    def _clamp(self, change) -> None:
        if self._clamping:
            return
        value = change["new"]
        if value is None:
            return
        kept = min(max(value, self.lo), self.hi)
        if kept == value:
            self.note.value = ""
            return
        self._clamping = True
        try:
            self.value = kept
        finally:
            self._clamping = False
        bound = f"above the largest allowed ({self.hi:g})" if value > self.hi else \
            f"below the smallest allowed ({self.lo:g})"
        what = self.description or "this field"
        self.note.value = (f"<span class='wb-note' style='color:#8a4b00'>{html.escape(what)}: {value:g} is {bound}; "
                           f"using {kept:g}</span>")

    @property
    def row(self) -> widgets.HBox:
        """The field with its note beside it (build it once per field)."""
        return widgets.HBox([self, self.note])


class ClampedIntText(_Clamped, widgets.IntText):
    """An integer field that clamps to ``[lo, hi]`` and says when it did.

    Example:
        >>> f = ClampedIntText(value=3, lo=1, hi=100, description="Samples")
        >>> f.value = 250; f.value, "100" in f.note.value
        (100, True)
    """

    def __init__(self, *, lo: int, hi: int, **kwargs) -> None:
        kwargs.setdefault("style", WIDE)
        super().__init__(**kwargs)
        self._clamp_setup(lo, hi)


class ClampedFloatText(_Clamped, widgets.FloatText):
    """A float field that clamps to ``[lo, hi]`` and says when it did."""

    def __init__(self, *, lo: float, hi: float, **kwargs) -> None:
        kwargs.setdefault("style", WIDE)
        super().__init__(**kwargs)
        self._clamp_setup(lo, hi)


class CodeView(widgets.VBox):
    """"Copy as code": a toggle that shows the library call of the panel's last action as a
    notebook cell (selectable: one click selects it all), or hides it.

    Disabled until the panel has run something; :meth:`set` gives it the cell.

    Example:
        >>> view = CodeView("wb-trace-code"); view.set("import workbench as wb\n"); view.code
        'import workbench as wb\n'
    """

    def __init__(self, css: str) -> None:
        self.button = widgets.ToggleButton(description="Copy as code", icon="code", disabled=True,
                                           tooltip="the workbench call that reproduces this tab's last action, "
                                                   "for a notebook (run something first)",
                                           layout=widgets.Layout(width="max-content"))
        self.button.add_class("wb-code-button")
        self.text = widgets.HTML(layout=widgets.Layout(display="none"))
        self.text.add_class("wb-code-text")
        self.code = ""
        self.button.observe(lambda _: self._draw(), "value")
        super().__init__([self.button, self.text])
        self.add_class("wb-code")
        self.add_class(css)

    def set(self, code: str) -> None:
        """The cell of the last action (``""``: none, the button disabled)."""
        self.code = code
        self.button.disabled = not code
        if not code:
            self.button.value = False
        self._draw()

    def show(self) -> None:
        """Open the cell (what a click on the button does)."""
        self.button.value = True

    def _draw(self) -> None:
        shown = bool(self.button.value and self.code)
        self.text.layout.display = "" if shown else "none"
        self.text.value = (
            # The widget's own line height (28 px) and font would make the cell read as prose.
            "<pre class='wb-code-snippet' style='user-select:all;-webkit-user-select:all;background:#f6f8fa;"
            "border:1px solid #ddd;padding:6px 8px;margin:2px 0;font-size:12px;line-height:1.4;"
            "font-family:var(--jp-code-font-family,monospace);white-space:pre;overflow-x:auto'>"
            f"{html.escape(self.code)}</pre>" if shown else "")

