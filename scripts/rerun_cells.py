"""Run again only the cells of a committed notebook that read committed results, keeping every
other cell's outputs: after a long run lands in ``assets/results/``, its table or figure in the
notebook is brought up to date without the hour a full run takes (scripts/run_notebooks.py).

The chosen cells (those whose source contains ``--match``) run in order in a fresh kernel, after
``--prelude`` (the imports they need); their outputs replace the old ones, and the notebook's
metadata records which cells were run again and when.

Usage:
    .venv/bin/python scripts/rerun_cells.py notebooks/05_does_editing_edit_knowledge.ipynb \\
        --match 'curves_dir = ' --prelude 'import json, workbench as wb
    from workbench.facts import ASSETS
    from workbench.figures import evaluation as eval_figures'
"""

from __future__ import annotations

import argparse
import copy
import datetime
import sys
from pathlib import Path


def rerun(path: Path, matches: list[str], prelude: str, *, timeout: int = 600) -> list[int]:
    """Execute the matching cells of ``path`` after ``prelude`` and write their outputs back;
    returns their indices. Raises on a cell error (the file is left untouched)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    chosen = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(m in c.source for m in matches)]
    if not chosen:
        raise SystemExit(f"no code cell of {path} contains {matches}")
    mini = copy.deepcopy(nb)
    mini.cells = [nbformat.v4.new_code_cell(prelude)] + [copy.deepcopy(nb.cells[i]) for i in chosen]
    NotebookClient(mini, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    for i, cell in zip(chosen, mini.cells[1:]):
        nb.cells[i].outputs = cell.outputs
    nb.metadata.setdefault("workbench", {})["cells_run_again"] = {
        "cells": chosen, "date": datetime.date.today().isoformat()}
    nbformat.write(nb, path)
    return chosen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("notebook", type=Path)
    ap.add_argument("--match", action="append", required=True, help="run the code cells containing this text")
    ap.add_argument("--prelude", default="import workbench as wb", help="code run first (the cells' imports)")
    args = ap.parse_args(argv)
    print("ran again:", rerun(args.notebook, args.match, args.prelude))
    return 0


if __name__ == "__main__":
    sys.exit(main())
