"""The Jupyter app: :class:`Workbench`, connected panels that call the library.

Importing this package imports ``ipywidgets`` (the ``ui`` extra); the library
itself never does, and ``workbench.Workbench`` imports it only when first used.
"""

from workbench.ui.app import Workbench

__all__ = ["Workbench"]
