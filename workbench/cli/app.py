"""``workbench app``: serve the workbench notebook as an app (Voila) or open it in JupyterLab.

The app runs code (it edits weights) for whoever reaches it, so: it binds to
127.0.0.1 only, asks for a random token (printed in the URL), answers only requests
for a loopback host (no DNS rebinding), keeps one kernel at a time
(:mod:`workbench.cli.voila_server`; a page whose kernel another tab took says so and
disables its controls), prints the port it really listens on (a busy
port is an error, not a silent move), and stops its server when it is stopped.
Before it serves, it computes the default edit's key statistics if this machine has
none cached (:func:`prepare`; ``--no-prepare`` skips it), so that the first Apply in
front of a class takes seconds, not half a minute.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

from workbench.errors import WorkbenchError

NOTEBOOK = Path(__file__).resolve().parent.parent.parent / "notebooks" / "workbench.ipynb"

#: The app page's Voila template (workbench/cli/voila_templates/; the server finds it there):
#: Voila's "lab" page, plus a banner when another tab took this page's kernel or it stopped.
VOILA_TEMPLATE = "workbench"

APP_SOURCE = """import workbench as wb

wb.Workbench()"""


def notebook_path() -> Path:
    """The app notebook: the repository's, or a copy written to the cache folder for installs without it."""
    if NOTEBOOK.exists():
        return NOTEBOOK
    import nbformat

    from workbench.runtime.cache import cache_dir

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
    p.add_argument("--token", default=None, help="the access token (default: a new random one, shown in the URL)")
    p.add_argument("--dry-run", action="store_true", help="print the server command and exit")
    p.add_argument("--no-prepare", action="store_true",
                   help="serve at once: do not first compute the default edit's key statistics if missing")
    p.add_argument("--lesson", action="store_true",
                   help="start in lesson mode; before serving, prepare the lesson in the cache if the committed "
                        "one does not fit this model, and save its edits (minutes, once per machine)")
    p.set_defaults(handler=run)


def command(args: argparse.Namespace, token: str) -> list[str]:
    """The server's command line, on 127.0.0.1:``args.port`` with ``token``."""
    if not 0 < args.port < 65536:
        raise WorkbenchError(f"--port must be between 1 and 65535, got {args.port}")
    if not token or not token.isascii() or not all(c.isalnum() or c in "-_" for c in token):
        raise WorkbenchError("--token must be letters, digits, '-' or '_'")
    path = notebook_path()
    if args.lab:
        # JupyterLab's host check is on by default; only the token is ours to set.
        return [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={args.port}",
                "--ServerApp.port_retries=0", f"--ServerApp.root_dir={path.parent}", "--no-browser",
                f"--IdentityProvider.token={token}", f"--LabApp.default_url=/lab/tree/{path.name}"]
    return [sys.executable, "-m", "workbench.cli.voila_server", str(path), "--no-browser", f"--port={args.port}",
            "--Voila.ip=127.0.0.1", "--Voila.port_retries=0", f"--token={token}",
            "--VoilaConfiguration.multi_kernel_manager_class=workbench.cli.voila_server.NewestKernelOnly",
            f"--template={VOILA_TEMPLATE}", "--VoilaConfiguration.show_tracebacks=False"]


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise WorkbenchError(f"port {port} on 127.0.0.1 is in use; choose another with --port") from None


def run(args: argparse.Namespace) -> int:
    import importlib.util

    needed = "jupyterlab" if args.lab else "voila"
    if importlib.util.find_spec(needed) is None or importlib.util.find_spec("ipywidgets") is None:
        raise WorkbenchError(f"the app needs {needed} and ipywidgets: pip install 'workbench[ui]'")
    token = args.token or secrets.token_urlsafe(24)
    cmd = command(args, token)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    _check_port_free(args.port)
    if not args.no_prepare:
        prepare(os.environ.get("WORKBENCH_APP_MODEL") or None)
    if args.lesson and not args.no_prepare:
        prepare_lesson(os.environ.get("WORKBENCH_APP_MODEL") or None)
    path = "lab" if args.lab else ""
    url = f"http://127.0.0.1:{args.port}/{path}?token={token}"
    what = "JupyterLab" if args.lab else "the workbench app (Voila)"
    print(f"workbench app: serving {what} on {url} (Ctrl-C stops)", file=sys.stderr)
    if os.geteuid() == 0 and args.lab:
        cmd.append("--allow-root")
    # `import workbench` has set the thread policy (OMP_WAIT_POLICY) in this environment:
    # the kernel inherits it before it imports torch (workbench/runtime/threads.py).
    env = dict(os.environ)
    # The panels draw their own progress bars; the library's tqdm bars would appear
    # below the app when drawn from the panels' worker threads.
    env.setdefault("WORKBENCH_PROGRESS", "0")
    if args.lesson:
        env["WORKBENCH_LESSON"] = "1"  # the app notebook's Workbench() starts in lesson mode
    return serve(cmd, env)


def prepare(model_name: str | None = None, *, method: str | None = None) -> list[Path]:
    """Compute what the app's first default edit reads and would otherwise compute in the
    class's first Apply: ``method``'s (default: the Edit panel's first) FFN key statistics at its default layer (about 20 s
    on 2 cores, once per machine; cached under ``WORKBENCH_CACHE``). Returns their files.

    Example:
        >>> [p.name for p in prepare()]                            # doctest: +SKIP
        ['3f2a..._stats_20000tok_L4.pt']
    """
    from workbench.editing import method_names
    from workbench.editing.stats import statistics_files
    from workbench.core.model import load_model

    method = method or method_names()[0]
    model = load_model(model_name) if model_name else load_model()
    print(f"workbench app: {method}'s key statistics for {model.name} (computed once per machine)…",
          file=sys.stderr)
    files = statistics_files(model, method)
    del model
    return files


def _die_with_parent() -> None:
    """In the server's process, before it runs: the kernel sends it SIGTERM when ``workbench app``
    dies, even by SIGKILL (which no handler sees; the server lived on as an orphan, serving)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def serve(cmd: list[str], env: dict) -> int:
    """Run the server until it ends, or until this process gets SIGINT or SIGTERM —
    then stop the server too (it would otherwise live on, holding its kernels)."""
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def prepare_lesson(model_name: str | None = None) -> int:
    """Lesson mode's set-up: ``python -m workbench.ui.lesson --cache`` in its own process (the
    command line never imports the app's widgets), which prepares the lesson in the cache unless a
    current one is committed or cached, and saves each lesson fact's default edit. Returns its status."""
    cmd = [sys.executable, "-m", "workbench.ui.lesson", "--cache"] + (["--model", model_name] if model_name else [])
    print("workbench app: preparing the lesson (once per machine)…", file=sys.stderr)
    return subprocess.run(cmd, check=False).returncode
