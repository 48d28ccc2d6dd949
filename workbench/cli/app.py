"""``workbench app``: serve the workbench notebook as an app (Voila) or open it in JupyterLab.

Binds to 127.0.0.1 only: the app runs code (edits weights) for whoever reaches it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from workbench.errors import WorkbenchError

NOTEBOOK = Path(__file__).resolve().parent.parent.parent / "notebooks" / "workbench.ipynb"

APP_SOURCE = """import workbench as wb

wb.Workbench()"""


def notebook_path() -> Path:
    """The app notebook: the repository's, or a copy written to the cache folder for installs without it."""
    if NOTEBOOK.exists():
        return NOTEBOOK
    import nbformat

    from workbench.cache import cache_dir

    path = Path(cache_dir()) / "app" / "workbench.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(APP_SOURCE)]
    nbformat.write(nb, str(path))
    return path


def register(sub) -> None:
    p = sub.add_parser("app", help="serve the workbench app (Voila) or open it in JupyterLab")
    p.add_argument("--port", type=int, default=8866, help="port on 127.0.0.1 (default 8866)")
    p.add_argument("--lab", action="store_true", help="open the notebook in JupyterLab instead of Voila")
    p.add_argument("--dry-run", action="store_true", help="print the server command and exit")
    p.set_defaults(handler=run)


def command(args: argparse.Namespace) -> list[str]:
    if not 0 < args.port < 65536:
        raise WorkbenchError(f"--port must be between 1 and 65535, got {args.port}")
    path = notebook_path()
    if args.lab:
        return [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={args.port}",
                "--ServerApp.port_retries=0", f"--ServerApp.root_dir={path.parent}", "--no-browser",
                f"--LabApp.default_url=/lab/tree/{path.name}"]
    return [sys.executable, "-m", "voila", str(path), "--no-browser", f"--port={args.port}", "--Voila.ip=127.0.0.1",
            "--VoilaConfiguration.show_tracebacks=False"]


def run(args: argparse.Namespace) -> int:
    import importlib.util

    needed = "jupyterlab" if args.lab else "voila"
    if importlib.util.find_spec(needed) is None or importlib.util.find_spec("ipywidgets") is None:
        raise WorkbenchError(f"the app needs {needed} and ipywidgets: pip install 'workbench[ui]'")
    cmd = command(args)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    url = f"http://127.0.0.1:{args.port}/"
    what = "JupyterLab" if args.lab else "the workbench app (Voila)"
    print(f"workbench app: serving {what} on {url} (Ctrl-C stops)", file=sys.stderr)
    if os.geteuid() == 0 and args.lab:
        cmd.append("--allow-root")
    env = dict(os.environ)
    # The panels draw their own progress bars; the library's tqdm bars would appear
    # below the app when drawn from the panels' worker threads.
    env.setdefault("WORKBENCH_PROGRESS", "0")
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130
