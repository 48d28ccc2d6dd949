"""The panels' "Copy as code": the library call of a panel's last action as a notebook cell.

A panel records its action as :class:`~workbench.snippets.Call` objects when it runs,
with the arguments it passed (not the widgets' values later), and shows the cell in its
:class:`~workbench.ui.widgets.CodeView`. The edits applied at that moment come first:
each one the Edit tab made, as its own ``wb.edit(...)`` call (:func:`remember_edit`).
"""

from __future__ import annotations

from collections.abc import Sequence

from workbench.editing import active_edits
from workbench.snippets import Call, Code, snippet

__all__ = ["Call", "Code", "cell", "remember_edit"]


def remember_edit(state, handle, call: Call) -> None:
    """Keep the call that made ``handle`` (an edit of the Edit tab), for the cells that follow it."""
    state.edit_calls = [(h, c) for h, c in getattr(state, "edit_calls", []) if h.active] + [(handle, call)]


def applied(state) -> list[Call | Code]:
    """The calls that made the edits applied now, oldest first; a comment for one made elsewhere."""
    made = getattr(state, "edit_calls", [])
    out: list[Call | Code] = []
    for handle in active_edits(state.model):
        call = next((c for h, c in made if h is handle), None)
        out.append(call if call is not None else
                   Code(f"# an edit made outside the Edit tab ({handle.method}): apply it here as you made it"))
    return out


def cell(state, calls: Call | Code | Sequence[Call | Code], *, fact=None, whole: bool = False,
         edits: bool = True) -> str:
    """The notebook cell of ``calls`` on the state's model, the edits applied now first (``edits``).

    Call it when the action runs (its arguments, the edits then). ``fact``: defined as ``fact``
    even where the calls read only ``fact.text``; ``whole``: with all its probe prompts.
    """
    return snippet(calls, model=state.model.name, facts=[fact] if fact is not None else [],
                   before=applied(state) if edits else [], fact_fields=None if whole else ())
