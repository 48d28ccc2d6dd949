"""Where the workbench keeps expensive, reusable things on disk.

One folder (``WORKBENCH_CACHE``, default ``~/.cache/workbench``) holds converted
model weights and FFN key statistics. Writers build into a temporary sibling and
rename it into place, so a reader never sees a half-written entry.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


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
