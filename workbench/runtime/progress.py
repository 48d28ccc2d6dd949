"""Progress bars and cooperative cancellation for long work.

Long loops (tracing, statistics, evaluation) wrap their iterable in
:func:`progress`, which shows a ``tqdm.auto`` bar (a widget in notebooks) and,
between items, checks a :class:`CancelToken` the UI can trip. Cancellation and
Ctrl-C both raise out of the loop; callers restore state in ``finally`` blocks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

from workbench.errors import WorkbenchError

T = TypeVar("T")


class Cancelled(WorkbenchError):
    """Raised inside a long computation after the user pressed Cancel."""


class CancelToken:
    """A flag the UI sets from a button callback; loops check it between steps.

    Example:
        >>> token = CancelToken()
        >>> token.cancel()
        >>> list(progress(range(3), cancel=token))
        Traceback (most recent call last):
        workbench.runtime.progress.Cancelled: cancelled by the user
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def reset(self) -> None:
        self._event.clear()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


def progress(
    iterable: Iterable[T],
    *,
    desc: str = "",
    total: int | None = None,
    cancel: CancelToken | None = None,
    show: bool | None = None,
) -> Iterator[T]:
    """Iterate with a progress bar; stop with :class:`Cancelled` when ``cancel`` trips.

    ``show=None`` shows the bar unless ``WORKBENCH_PROGRESS=0``.
    """
    if show is None:
        show = os.environ.get("WORKBENCH_PROGRESS", "1") != "0"
    if show:
        from tqdm.auto import tqdm

        iterable = tqdm(iterable, desc=desc, total=total, leave=False)
    try:
        for item in iterable:
            if cancel is not None:
                cancel.check()
            yield item
    finally:
        if show:
            iterable.close()
