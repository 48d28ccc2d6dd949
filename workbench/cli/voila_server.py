"""The Voila server ``workbench app`` starts: host checks on, one kernel at a time, and a
page that says when it has lost its kernel.

Voila 0.5 builds its web application with jupyter_server's host check switched off
(``allow_remote_access=True``), so a page on any web site could reach the app through
DNS rebinding, and every GET of the notebook starts another kernel (2.1 GB each with the
default model). :class:`LoopbackVoila` turns the check on — only loopback addresses and
``localhost`` are answered, whatever the ``Host`` header claims — and
:class:`NewestKernelOnly` shuts down the kernel of the previous page when a new page
starts one: the app serves one user, whose newest page wins.

A page whose kernel is gone would look alive and ignore every click, so the app's page
(the ``workbench`` Voila template in ``voila_templates/``, the ``lab`` template plus a
script) asks :class:`KernelStateHandler` every few seconds how its kernel is:
``alive``; ``replaced`` (another tab took it: the page says "This session moved to
another tab — reload this page to take it back"); or ``stopped`` (it died, restarted
or was shut down: "The app's kernel stopped — reload the page"). Then it covers itself
and disables its controls.

The token (``--token``) is Voila's own; ``workbench app`` makes a random one.

Run as ``python -m workbench.cli.voila_server NOTEBOOK [voila options]``.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from pathlib import Path

import tornado.web
from jupyter_core.utils import ensure_async
from jupyter_server.base.handlers import APIHandler
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyter_server.utils import url_path_join
from voila.app import Voila

#: The Jupyter data folder that holds the app's Voila template, voila/templates/workbench/
#: (``--template=workbench``: :data:`workbench.cli.app.VOILA_TEMPLATE`).
TEMPLATE_ROOT = Path(__file__).resolve().parent / "voila_templates"
#: How many ended kernels are remembered (each an id and a word).
REMEMBERED = 256

_KERNEL_ID = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"


class NewestKernelOnly(AsyncMappingKernelManager):
    """A kernel manager that keeps at most one kernel: a new one replaces the old.

    Starts are taken one at a time: without the lock, ten pages loading together each
    shut down the kernels they saw and then each started one (60 kernels were seen alive
    at once, 6 GB, until the server was killed). With it, a page waits for the one before
    it, and each start first shuts down every kernel there is.

    It remembers why its kernels ended (:meth:`kernel_state`), for the page that used one.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._one_at_a_time = asyncio.Lock()
        self._ended: OrderedDict[str, str] = OrderedDict()

    def _remember(self, kernel_id: str, why: str) -> None:
        """Why ``kernel_id`` ended: the first reason (a kernel restarted after a crash and then
        replaced had stopped for its page already)."""
        self._ended.setdefault(kernel_id, why)
        self._ended.move_to_end(kernel_id)
        while len(self._ended) > REMEMBERED:
            self._ended.popitem(last=False)

    async def start_kernel(self, *args, **kwargs):
        async with self._one_at_a_time:
            for kernel_id in list(self.list_kernel_ids()):
                self._remember(kernel_id, "replaced")
                await self.shutdown_kernel(kernel_id, now=True)
            kernel_id = await super().start_kernel(*args, **kwargs)
            if kernel_id in self:
                # A restarted kernel (after a crash) has lost the page's widgets: the page must reload.
                self.add_restart_callback(kernel_id, lambda: self._remember(kernel_id, "stopped"), "restart")
            return kernel_id

    async def kernel_state(self, kernel_id: str) -> str:
        """``"alive"``; ``"replaced"`` (a newer page's start shut it down); or ``"stopped"``
        (it died, was restarted, shut down, or was never this server's)."""
        if kernel_id in self._ended:
            return self._ended[kernel_id]
        if kernel_id not in self:
            return "stopped"
        try:
            alive = await ensure_async(self.get_kernel(kernel_id).is_alive())
        except KeyError:  # shut down meanwhile
            return "stopped"
        return "alive" if alive else "stopped"


class KernelStateHandler(APIHandler):
    """``GET /workbench/kernel/<id>`` → ``{"state": "alive" | "replaced" | "stopped"}``
    (the token, or the login cookie its first use set, and a loopback host required)."""

    @tornado.web.authenticated
    async def get(self, kernel_id: str) -> None:
        manager = self.kernel_manager
        if hasattr(manager, "kernel_state"):
            state = await manager.kernel_state(kernel_id)
        else:  # another kernel manager (--VoilaConfiguration.multi_kernel_manager_class)
            state = "alive" if kernel_id in manager else "stopped"
        self.set_header("Cache-Control", "no-store")
        self.finish({"state": state})


class LoopbackVoila(Voila):
    """Voila with jupyter_server's host check on (a request for a foreign host gets 403),
    the app's template found in the package, and :class:`KernelStateHandler`."""

    def setup_template_dirs(self) -> None:
        # Voila looks templates up in the Jupyter data path, when it starts and again for each
        # static file a page asks for (/voila/templates/workbench/static/...): the package's
        # folder goes first in this process's path. (Kernels inherit it: it holds only the template.)
        folders = os.environ.get("JUPYTER_PATH", "").split(os.pathsep)
        if str(TEMPLATE_ROOT) not in folders:
            os.environ["JUPYTER_PATH"] = os.pathsep.join([str(TEMPLATE_ROOT), *filter(None, folders)])
        super().setup_template_dirs()

    def init_settings(self) -> dict:
        settings = super().init_settings()
        settings["allow_remote_access"] = False
        settings["local_hostnames"] = ["localhost"]
        return settings

    def init_handlers(self) -> list:
        # Before Voila's own: its last handler answers every path with the notebook.
        state = (url_path_join(self.server_url, r"/workbench/kernel/%s" % _KERNEL_ID), KernelStateHandler)
        return [state, *super().init_handlers()]


if __name__ == "__main__":
    LoopbackVoila.launch_instance()
