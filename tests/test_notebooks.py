"""Every notebook runs top to bottom (headless, with CI-sized sample counts).

``WORKBENCH_QUICK=1`` asks the notebooks to shrink their sample counts. The
committed copies are executed with ``scripts/run_notebooks.py``; each one's
metadata (``workbench.run``) says whether its outputs come from a full or a
CI-sized run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    os.environ["WORKBENCH_QUICK"] = "1"
    nb = nbformat.read(path, as_version=4)
    # 30 minutes a cell: a cell that computes key statistics on an empty cache (CI) took over 15
    # on a loaded 2-core machine; the whole suite still has to fit CI's 90 minutes.
    client = NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:
        # Keep the executed copy (outputs, figures) as a test artefact.
        out = Path(os.environ.get("WORKBENCH_ARTIFACTS", "test-artifacts")) / "notebooks"
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / path.name)
    errors = [
        out for cell in nb.cells if cell.cell_type == "code"
        for out in cell.get("outputs", []) if out.get("output_type") == "error"
    ]
    assert not errors, errors[0].get("evalue")


def test_app_notebook_is_committed_without_outputs():
    # The app notebook is what `workbench app` serves and JupyterLab opens: a saved run of it
    # (widget views whose state is gone, progress bars) is noise in every diff.
    import json

    app = json.loads((NOTEBOOKS[0].parent / "workbench.ipynb").read_text())
    code = [c for c in app["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
