"""The Jupyter app: :class:`Workbench`, connected panels that call the library.

Importing this package imports ``ipywidgets`` (the ``ui`` extra); the library
itself never does, and ``workbench.Workbench`` imports it only when first used.
Panels (``fact``, ``trace``, ``memories``, ``edit``, ``probes``, ``compare``, ``knockout``) share
``state`` (the shared state, tasks, the busy line), ``widgets`` (the error
line, tables, parsers, the "Copy as code" view), ``code`` (each action's ``wb.*``
call as a notebook cell, from :mod:`workbench.snippets`) and ``figures``
(FigureWidget wrappers); ``lesson`` holds lesson mode's facts prepared ahead and
``lesson_strip`` its step cards.

What it may import: every library layer and ``ipywidgets`` — never ``cli``. Nothing
in the library imports it (the root's lazy ``wb.Workbench`` aside).
"""

from workbench.ui.app import Workbench

__all__ = ["Workbench"]
