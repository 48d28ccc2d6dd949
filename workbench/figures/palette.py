"""One colour per editing method, the same in every panel of every evaluation figure.

Plotly colours traces by their position in the figure, so a method drawn in two
subplots got two colours and its legend entry matched only one of them (the many-edits
chart showed AlphaEdit's perplexity blow-up in retrieval's colour). Figures here ask
:func:`method_colour` instead: a method's colour depends on its name only.

The built-in methods have fixed colours (chosen so that the ones usually drawn together
differ most: Compare's defaults, and the committed sequential runs); any other registered
method (a plugin) takes a spare colour by its place in the registry, and an unknown name
(a report of a method no longer registered) one by a stable hash of the name.

Example:
    >>> method_colour("rome")
    '#1f77b4'
    >>> method_colour("rome") == method_colour("rome") != method_colour("retrieval")
    True
"""

from __future__ import annotations

import zlib

from workbench.editing.registry import method_names

#: The built-in methods' colours (D3's category ten, re-ordered, and a navy).
METHOD_COLOURS: dict[str, str] = {
    "rome": "#1f77b4",        # blue
    "memit": "#ff7f0e",       # orange
    "pmet": "#8c564b",        # brown
    "emmet": "#393b79",       # navy
    "alphaedit": "#d62728",   # red
    "kn": "#bcbd22",          # olive
    "ft": "#7f7f7f",          # grey
    "grace": "#e377c2",       # pink
    "wise": "#9467bd",        # purple
    "in-context": "#2ca02c",  # green
    "retrieval": "#17becf",   # cyan
    "retrieval-chain": "#9edae5",  # light cyan: the retrieval memory with its chain
    "alphaedit-paper": "#ff9896",  # light red: AlphaEdit's published recipe beside the tuned one
    "memit-kept": "#ffbb78",  # light orange: MEMIT with its earlier edits' keys kept
}
#: Colours for methods registered by plugins, in registry order (then reused).
SPARE = ("#e6ab02", "#66a61e", "#a6761d", "#1b9e77", "#e7298a", "#7570b3")
#: Line styles of a method's second, third... run in one figure (the same colour: the same method).
DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


def method_colour(method: str) -> str:
    """The colour every evaluation figure draws ``method`` in (a ``"#rrggbb"`` string).

    Example:
        >>> method_colour("in-context")
        '#2ca02c'
    """
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    others = [m for m in method_names() if m not in METHOD_COLOURS]
    # A registered plugin: by its registry place, so two plugins never share a colour (up to six).
    at = others.index(method) if method in others else len(others) + zlib.crc32(method.encode())
    return SPARE[at % len(SPARE)]


def run_styles(methods: list[str]) -> list[tuple[str, str]]:
    """``(colour, dash)`` for each of a figure's runs: the method's colour, and a new dash for
    each further run of the same method (e.g. one run in batches of 10 beside one without).

    Example:
        >>> run_styles(["rome", "retrieval", "rome"])
        [('#1f77b4', 'solid'), ('#17becf', 'solid'), ('#1f77b4', 'dash')]
    """
    seen: dict[str, int] = {}
    out = []
    for m in methods:
        k = seen.get(m, 0)
        seen[m] = k + 1
        out.append((method_colour(m), DASHES[k % len(DASHES)]))
    return out
