"""How the workbench uses the CPU's threads: one policy, set before torch starts its thread pool.

torch's CPU build runs its parallel loops on an OpenMP pool whose idle threads
spin, waiting for the next loop. Alone on a machine that is fast; beside another
busy process (a browser, a Jupyter server, a second job) the spinning threads
and the other process fight for the cores and a forward pass can take many
times longer. ``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep instead.
The OpenMP runtime reads it once, when torch is first imported, so
:func:`apply` runs at the top of ``workbench/__init__.py`` — before anything in
the package imports torch. Where torch was imported first (``import torch``
above ``import workbench`` in a notebook), the setting cannot take effect any
more; :func:`policy` then says so (``"in_effect": False``).

``benchmarks/threads.py`` measures every policy here alone and beside a busy
process; the default below is the one chosen from those figures (README,
"Threads").

Choose another with the environment variable ``WORKBENCH_THREADS``:

* ``passive`` (default): torch's thread count, idle threads sleep;
* ``torch``: leave torch's own defaults alone (idle threads spin);
* a number ``N``: N threads, idle threads sleep.

An ``OMP_WAIT_POLICY`` set by the user is never overridden.

Example:
    >>> import workbench as wb
    >>> wb.thread_policy()["omp_wait_policy"]      # doctest: +SKIP
    'PASSIVE'
"""

from __future__ import annotations

import os
import sys

#: The policy used when ``WORKBENCH_THREADS`` is unset (chosen from benchmarks/threads.py).
DEFAULT = "passive"
POLICIES = ("passive", "torch")

_state: dict = {}


def _parse(value: str) -> tuple[str, int | None]:
    value = value.strip().lower()
    if value in POLICIES:
        return value, None
    if value.isdigit() and int(value) >= 1:
        return "threads", int(value)
    raise ValueError(f"WORKBENCH_THREADS={value!r}: choose passive, torch or a number of threads >= 1")


def apply() -> dict:
    """Set the environment for the policy (before torch loads); safe to call again."""
    if _state:
        return _state
    raw = os.environ.get("WORKBENCH_THREADS", DEFAULT)
    try:
        name, count = _parse(raw)
    except ValueError as exc:
        # A bad value must not stop `import workbench`: say so and use the default.
        print(f"workbench: {exc}; using {DEFAULT}", file=sys.stderr)
        name, count = DEFAULT, None
    torch_loaded = "torch" in sys.modules
    if name != "torch":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if count is not None:
        os.environ.setdefault("OMP_NUM_THREADS", str(count))
    _state.update(policy=name, threads_requested=count, torch_loaded_first=torch_loaded)
    return _state


def settle() -> None:
    """After torch is imported: a requested thread count also where torch was imported first."""
    import torch

    count = apply()["threads_requested"]
    if count and torch.get_num_threads() != count:
        torch.set_num_threads(count)


def policy() -> dict:
    """The policy in this process, read back: what was asked, the environment, torch's threads.

    ``in_effect`` is False when torch was imported before the workbench (the OpenMP
    runtime had already read its settings).
    """
    import torch

    state = apply()
    return {
        "policy": state["policy"],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "in_effect": not state["torch_loaded_first"] or state["policy"] == "torch",
    }
