"""Execute notebooks in place, so the committed copies carry the outputs of a full run.

Each notebook runs top to bottom in a fresh kernel from the notebooks/ folder,
without ``WORKBENCH_QUICK`` (full sample counts) unless ``--quick`` is given, and
is written back with its outputs. The run's kind, wall time and date are stored
in the notebook metadata under ``workbench`` so a reader can tell a full run
from a CI-sized one.

Usage:
    .venv/bin/python scripts/run_notebooks.py notebooks/01_quickstart.ipynb notebooks/06_your_own_model.ipynb
    .venv/bin/python scripts/run_notebooks.py --quick          # all notebooks, CI-sized
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(path: Path, *, quick: bool, timeout: int) -> float:
    """Execute ``path`` in place; returns the wall seconds. Raises on a cell error (file left untouched)."""
    import nbformat
    from nbclient import NotebookClient

    if quick:
        os.environ["WORKBENCH_QUICK"] = "1"
    else:
        os.environ.pop("WORKBENCH_QUICK", None)
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    nb.metadata["workbench"] = {
        "run": "quick (WORKBENCH_QUICK=1)" if quick else "full",
        "seconds": round(seconds),
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPU cores"
        + (f", {os.environ['OMP_NUM_THREADS']} torch thread(s)" if os.environ.get("OMP_NUM_THREADS") else ""),
    }
    nbformat.write(nb, path)
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--quick", action="store_true", help="CI-sized sample counts (WORKBENCH_QUICK=1)")
    ap.add_argument("--timeout", type=int, default=7200, help="seconds per cell")
    args = ap.parse_args(argv)
    paths = args.paths or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        seconds = run(path.resolve(), quick=args.quick, timeout=args.timeout)
        print(f"{path}: {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
