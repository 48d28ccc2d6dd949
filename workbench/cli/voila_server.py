"""The Voila server ``workbench app`` starts: host checks on, one kernel at a time.

Voila 0.5 builds its web application with jupyter_server's host check switched off
(``allow_remote_access=True``), so a page on any web site could reach the app through
DNS rebinding, and every GET of the notebook starts another kernel (2.1 GB each with the
default model). :class:`LoopbackVoila` turns the check on — only loopback addresses and
``localhost`` are answered, whatever the ``Host`` header claims — and
:class:`NewestKernelOnly` shuts down the kernel of the previous page when a new page
starts one: the app serves one user, whose newest page wins.

The token (``--token``) is Voila's own; ``workbench app`` makes a random one.

Run as ``python -m workbench.cli.voila_server NOTEBOOK [voila options]``.
"""

from __future__ import annotations

import asyncio

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from voila.app import Voila


class NewestKernelOnly(AsyncMappingKernelManager):
    """A kernel manager that keeps at most one kernel: a new one replaces the old.

    Starts are taken one at a time: without the lock, ten pages loading together each
    shut down the kernels they saw and then each started one (60 kernels were seen alive
    at once, 6 GB, until the server was killed). With it, a page waits for the one before
    it, and each start first shuts down every kernel there is.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._one_at_a_time = asyncio.Lock()

    async def start_kernel(self, *args, **kwargs):
        async with self._one_at_a_time:
            for kernel_id in list(self.list_kernel_ids()):
                await self.shutdown_kernel(kernel_id, now=True)
            return await super().start_kernel(*args, **kwargs)


class LoopbackVoila(Voila):
    """Voila with jupyter_server's host check on (a request for a foreign host gets 403)."""

    def init_settings(self) -> dict:
        settings = super().init_settings()
        settings["allow_remote_access"] = False
        settings["local_hostnames"] = ["localhost"]
        return settings


if __name__ == "__main__":
    LoopbackVoila.launch_instance()
