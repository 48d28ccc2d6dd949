"""Where the workbench keeps expensive, reusable things on disk.

One folder (``WORKBENCH_CACHE``, default ``~/.cache/workbench``) holds converted
model weights and FFN key statistics. Writers build into a temporary sibling and
rename it into place, so a reader never sees a half-written entry. A folder that
cannot be used (a file, read-only, full) is one :class:`WorkbenchError` naming it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

log = logging.getLogger(__name__)

#: A temporary build folder this old is a killed build's, whoever made it: a conversion takes minutes.
STALE_AFTER_S = 24 * 3600

#: Errors of a build that mean the cache cannot take what is written, not that the build is wrong.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def cache_root() -> Path:
    """The cache folder: ``WORKBENCH_CACHE``, or ``~/.cache/workbench`` when it is unset or empty.

    (An empty value used to put the cache in the current folder.)
    """
    value = os.environ.get("WORKBENCH_CACHE", "")
    return Path(value) if value else Path.home() / ".cache" / "workbench"


def unusable_cache(path: Path, exc: OSError) -> WorkbenchError:
    """The one-line error for an OSError at ``path`` inside the cache: names the variable and the path."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason = "a file is where a folder should be"
    else:
        reason = exc.strerror or type(exc).__name__
    root = cache_root()
    where = (f"WORKBENCH_CACHE is {str(root)!r}" if os.environ.get("WORKBENCH_CACHE")
             else f"WORKBENCH_CACHE is unset, so it is {str(root)!r}")
    return WorkbenchError(
        f"cannot use the workbench cache at {str(exc.filename or path)!r} ({reason}); "
        f"{where}: set WORKBENCH_CACHE to a writable folder with free space"
    )


def _in_cache(path: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(cache_root().resolve())
    except (OSError, RuntimeError):
        return False


def cache_dir(*parts: str) -> Path:
    """Return (and create) a folder inside the workbench cache.

    Example:
        >>> cache_dir("models").name
        'models'
    """
    path = cache_root().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unusable_cache(path, exc) from None
    return path


def _owner() -> str:
    # Names the process that builds into a temporary folder, so a later run can tell it died.
    return f"{os.getpid()}@{socket.gethostname()}"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, run by another user
    return True


def remove_stale_builds(target: Path) -> None:
    """Remove the temporary folders of killed builds of ``target`` (``.tmp-<name>-<pid>@<host>-*``).

    Stale: made on this machine by a process that is gone, or (another machine's, or
    from before folders named their builder) untouched for :data:`STALE_AFTER_S`.
    """
    prefix = f".tmp-{target.name}-"
    try:
        entries = [p for p in target.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    except OSError:
        return
    host, now = socket.gethostname(), time.time()
    for folder in entries:
        rest = folder.name[len(prefix):]
        owned = re.fullmatch(r"(\d+)@(.+)-[a-z0-9_]+", rest)
        if owned is None and not re.fullmatch(r"[a-z0-9_]+", rest):
            continue  # another target's (whose name begins with this one's)
        try:
            old = now - folder.stat().st_mtime > STALE_AFTER_S
        except OSError:
            continue
        dead = owned is not None and owned.group(2) == host and not _pid_running(int(owned.group(1)))
        if old or dead:
            log.info("removing %s, left by a build that was killed", folder)
            shutil.rmtree(folder, ignore_errors=True)


def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Create the folder ``target`` by calling ``build(tmp_folder)``, then renaming.

    If ``build`` raises (or the process dies) the target is left absent and the
    temporary folder is removed (or, after a crash, removed by a later call: its
    name says which process made it, see :func:`remove_stale_builds`).
    """
    remove_stale_builds(target)
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-{_owner()}-", dir=target.parent))
    except OSError as exc:
        raise unusable_cache(target, exc) from None
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first; its copy is as good as ours.
            if not target.exists():
                raise
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS and _in_cache(target):
            raise unusable_cache(target, exc) from None
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
    try:
        path.unlink(missing_ok=True)
        digest.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only cache: the value is computed anyway, and saving it says what is wrong
    return None


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder.

    Raises:
        WorkbenchError: ``path`` is in the cache and the cache cannot take it
            (any other path keeps its OSError: it is not the cache's to explain).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        if _in_cache(path):
            raise unusable_cache(path, exc) from None
        raise
