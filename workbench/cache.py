"""Where the workbench keeps expensive, reusable things on disk.

One folder (``WORKBENCH_CACHE``, default ``~/.cache/workbench``) holds converted
model weights and FFN key statistics. Writers build into a temporary sibling and
rename it into place, so a reader never sees a half-written entry.
"""

from __future__ import annotations

import hashlib
import io
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


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checked(path: Path, value: Any) -> None:
    """``torch.save`` ``value`` to ``path`` atomically, with the SHA-256 of its bytes beside
    it (``path.sha256``), which :func:`load_checked` verifies."""
    import torch

    buf = io.BytesIO()
    torch.save(value, buf)
    data = buf.getvalue()
    write_file_atomically(path, data)
    write_file_atomically(_digest_path(path), hashlib.sha256(data).hexdigest().encode())


def load_checked(path: Path, check: Callable[[Any], str | None]) -> Any | None:
    """What :func:`save_checked` wrote at ``path``, if it is intact and passes ``check``;
    else None (the caller computes it again).

    Intact: the bytes match the SHA-256 saved beside them (a file from before digests
    were kept, with none beside it, is judged by ``check`` alone). Read with
    ``weights_only=True``, so a file can hold tensors and plain containers but never
    code to run. ``check(value)`` returns None when the value is what the caller expects
    (shape, dtype, finiteness) or a reason when it is not. A file that fails is removed,
    with a warning naming it and the reason.

    Example:
        >>> C = load_checked(path, lambda t: None if t.shape == (4, 4) else "wrong shape")  # doctest: +SKIP
    """
    import torch

    if not path.exists():
        return None
    digest = _digest_path(path)
    try:
        data = path.read_bytes()
        want = digest.read_text().strip() if digest.exists() else None
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            reason = "its bytes do not match the SHA-256 saved with it"
        else:
            value = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            reason = check(value)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is rebuilt, never trusted
        reason = f"unreadable ({type(exc).__name__})"
    if reason is None:
        return value
    log.warning("cache file %s is corrupt (%s); computing it again", path, reason)
    path.unlink(missing_ok=True)
    digest.unlink(missing_ok=True)
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
