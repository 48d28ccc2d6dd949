"""Where the workbench keeps expensive, reusable things on disk.

One folder (``WORKBENCH_CACHE``, default ``~/.cache/workbench``) holds converted
model weights and FFN key statistics. Writers build into a temporary sibling and
rename it into place, so a reader never sees a half-written entry.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cache_dir(*parts: str) -> Path:
    """Return (and create) a folder inside the workbench cache.

    Example:
        >>> cache_dir("models").name
        'models'
    """
    root = Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Create the folder ``target`` by calling ``build(tmp_folder)``, then renaming.

    If ``build`` raises (or the process dies) the target is left absent and the
    temporary folder is removed (or, after a crash, ignored: its name starts with ``.tmp``).
    """
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first; its copy is as good as ours.
            if not target.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_checked(path: Path, check: Callable[[Any], str | None]) -> Any | None:
    """What ``torch.save`` wrote at ``path``, if it passes ``check``; else None (rebuild it).

    Read with ``weights_only=True``, so a file can hold tensors and plain containers but
    never code to run. ``check(value)`` returns None when the value is what the caller
    expects (shape, dtype, finiteness) or a reason when it is not. A file that cannot be
    read or fails the check is removed, with a warning naming it and the reason, and the
    caller computes the entry again.

    Example:
        >>> C = load_checked(path, lambda t: None if t.shape == (4, 4) else "wrong shape")  # doctest: +SKIP
    """
    import torch

    if not path.exists():
        return None
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
        reason = check(value)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is rebuilt, never trusted
        reason = f"unreadable ({type(exc).__name__})"
    if reason is None:
        return value
    log.warning("cache file %s is corrupt (%s); computing it again", path, reason)
    path.unlink(missing_ok=True)
    return None


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
