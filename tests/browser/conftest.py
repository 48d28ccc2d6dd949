"""Fixtures for real-browser tests: JupyterLab and Voila servers on 127.0.0.1, and
Debian's Chromium driven by Playwright (see ../../../shared/BROWSER-TESTS.md).

Run with ``pytest -m browser tests/browser``. Needs ``apt-get install chromium``,
the ``ui`` and ``test`` extras, and the default model in the cache. Screenshots go
to ``assets/screenshots/``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flow import TOKEN

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "workbench.ipynb"
SCREENSHOTS = ROOT / "assets" / "screenshots"
CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
]


def pytest_collection_modifyitems(config, items):
    # Minutes of real-model work in a browser: run only when asked for (-m browser).
    asked = "browser" in (config.getoption("markexpr", "") or "") and "not browser" not in config.getoption("markexpr", "")
    for item in items:
        if "tests/browser" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)
            if not asked:
                item.add_marker(pytest.mark.skip(reason="browser test: run with -m browser"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str | None, timeout: float, proc: subprocess.Popen, log: Path, port: int | None = None) -> None:
    """Until ``url`` answers 2xx (or, with ``port``, until the port accepts connections)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if port is not None:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                return
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.3)
    raise RuntimeError(f"server not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _server_env(tmp: Path) -> dict:
    env = dict(os.environ)
    env.update(
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        WORKBENCH_PROGRESS="0", PYTHONUNBUFFERED="1",
        WORKBENCH_TRACE_CACHE=str(tmp / "traces"),  # each server starts with no computed trace kept
    )
    env.setdefault("WORKBENCH_CACHE", str(Path.home() / ".cache" / "workbench"))
    return env


def _prepared(env: dict) -> None:
    """What `workbench app` does before it serves: the default edit's key statistics, computed
    once per machine (the app's first Apply would compute them otherwise)."""
    from workbench.cli.app import prepare

    old = os.environ.get("WORKBENCH_CACHE")
    os.environ["WORKBENCH_CACHE"] = env["WORKBENCH_CACHE"]
    try:
        prepare(env.get("WORKBENCH_APP_MODEL") or None)
    finally:
        if old is None:
            os.environ.pop("WORKBENCH_CACHE")
        else:
            os.environ["WORKBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def chromium_path():
    if not Path(CHROMIUM).exists():
        if os.environ.get("WORKBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"no Chromium at {CHROMIUM}; CI must install it (.ci/install-browser.sh)")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    pytest.importorskip("playwright")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    # Nothing may wait on the closed network: only the local servers answer.
    context.route(re.compile(r"^(?!https?://(127\.0\.0\.1|localhost)[:/]).*"), lambda route: route.abort())
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    context.close()


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    pytest.importorskip("jupyterlab")
    tmp = tmp_path_factory.mktemp("lab")
    env = _server_env(tmp)
    _prepared(env)
    # The news pop-up would cover the notebook; switching it off is per environment.
    subprocess.run([sys.executable, "-m", "jupyter", "labextension", "disable", "--level=sys_prefix",
                    "@jupyterlab/apputils-extension:announcements"], env=env, capture_output=True)
    port = free_port()
    log = tmp / "lab.log"
    # A copy: JupyterLab autosaves what it runs, and a saved copy of the app notebook once broke
    # the next run; the repository's notebook stays as committed.
    root = tmp / "notebooks"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
           f"--ServerApp.root_dir={root}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           f"--LabApp.user_settings_dir={tmp / 'settings'}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    try:
        _wait(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", 60, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def voila_server(tmp_path_factory):
    pytest.importorskip("voila")
    tmp = tmp_path_factory.mktemp("voila")
    env = _server_env(tmp)
    _prepared(env)
    port = free_port()
    log = tmp / "voila.log"
    # The server `workbench app` starts (host check on, one kernel, a token), with tracebacks shown.
    from argparse import Namespace

    from workbench.cli.app import command

    cmd = command(Namespace(port=port, lab=False), TOKEN)
    cmd = [c for c in cmd if not c.startswith("--VoilaConfiguration.show_tracebacks")]
    cmd += ["--VoilaConfiguration.show_tracebacks=True"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    try:
        # A GET of "/" executes the notebook: wait for the port to listen instead.
        _wait(None, 60, proc, log, port=port)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def screenshots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
