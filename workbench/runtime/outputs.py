"""Writing a run's output files: checked before the run, written whole, never lost.

A long run (``workbench evaluate`` over hundreds of facts) must not end in a raw
``OSError`` that throws its results away. So an output path is checked before the
run starts (:func:`check_output`: not the input, not a folder or a device, not an
existing file unless the caller says it may be replaced, a folder that takes a new
file), and written through a temporary file renamed into place (:func:`write_output`),
so that a reader never sees half a file and a full disk leaves the old file (or none)
rather than a truncated one. When the write still fails, the text is kept in a
fallback file and the error says where.

Example:
    >>> check_output("out/report.json", "--report")          # doctest: +SKIP
    PosixPath('/home/me/out/report.json')
    >>> write_output("out/report.json", '{"n": 3}', "--report")   # doctest: +SKIP
    PosixPath('/home/me/out/report.json')
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from workbench.errors import WorkbenchError


class OutputNotWritten(WorkbenchError):
    """An output file could not be written; :attr:`kept` is where its text is instead (or None)."""

    def __init__(self, message: str, kept: Path | None) -> None:
        super().__init__(message)
        self.kept = kept


def _resolved(path) -> Path:
    return Path(path).expanduser().resolve()


def check_output(path, what: str, *, overwrite: bool = False, inputs: Iterable = (),
                 replaceable: Iterable = ()) -> Path | None:
    """Refuse, before any work, an output ``path`` the run could not write or must not replace.

    Args:
        path: the output file; None or ``"-"`` (stdout) pass.
        what: the option's name for the messages (``"--report"``).
        overwrite: an existing regular file may be replaced.
        inputs: files the run reads (the dataset): never replaced, whatever ``overwrite`` says.
        replaceable: files that may be replaced without ``overwrite`` (the report a resumed
            run goes on from, written again with the facts added).

    Returns:
        The resolved path, or None for no file.

    Raises:
        WorkbenchError: one line naming the option, the path and why; nothing was run.
    """
    if path is None or str(path) == "-":
        return None
    target = _resolved(path)
    for given in inputs:
        if given is not None and Path(str(given)).expanduser().exists() and _resolved(given) == target:
            raise WorkbenchError(f"{what} {str(path)!r} is an input of this run ({given}): writing it would "
                                 "replace it; choose another file (nothing was run)")
    if target.exists() or target.is_symlink():
        if target.is_dir():
            raise WorkbenchError(f"{what} {str(path)!r} is a folder; give a file name in it (nothing was run)")
        if not target.is_file():
            raise WorkbenchError(f"{what} {str(path)!r} is not a regular file (a device, a pipe or a socket); "
                                 "give a file name (nothing was run)")
        if not overwrite and target not in {_resolved(p) for p in replaceable if p is not None}:
            raise WorkbenchError(f"{what} {str(path)!r} already exists; choose another file or give --overwrite "
                                 "to replace it (nothing was run)")
    folder = target.parent
    if not folder.is_dir():
        raise WorkbenchError(f"{what} {str(path)!r}: the folder {str(folder)!r} does not exist (nothing was run)")
    try:  # the only sure test of a folder (read-only mounts, permissions, no inodes left) is to write in it
        fd, probe = tempfile.mkstemp(prefix=".workbench-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise WorkbenchError(f"{what} {str(path)!r}: cannot write in {str(folder)!r} "
                             f"({exc.strerror or exc}) (nothing was run)") from None
    return target


def write_atomically(path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in its folder, synced, then renamed into place.

    A reader (another process polling the report) sees the old file or the new one,
    never a torn one; a failure (a full disk) leaves no partial file. The file gets
    the permissions a plain ``open()`` would give it (not the temporary file's 0600).

    Raises:
        OSError: the file could not be written (the temporary file is removed).
    """
    path = Path(path).expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())  # a full disk may only say so here
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def fallback_folders() -> list[Path]:
    """Where output that cannot be written where asked is kept: the temporary folder, home, here."""
    folders = [Path(tempfile.gettempdir()), Path.home(), Path.cwd()]
    return list(dict.fromkeys(folders))


def write_output(path, text: str, what: str) -> Path:
    """Write ``text`` to ``path`` atomically; if that fails, keep it in a fallback file.

    Returns:
        ``path``, written.

    Raises:
        OutputNotWritten: ``path`` could not be written; its message names the reason and
            the fallback file the text is kept in (``kept``), or says that none could be written.
    """
    try:
        return write_atomically(path, text)
    except OSError as exc:
        reason = exc.strerror or str(exc)
    name = Path(path).name or "output"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in fallback_folders():
        spare = folder / f"workbench-{stamp}-{os.getpid()}-{name}"
        try:
            kept = write_atomically(spare, text)
        except OSError:
            continue
        raise OutputNotWritten(f"could not write {what} {str(path)!r} ({reason}); it is kept in {str(kept)!r}", kept)
    raise OutputNotWritten(
        f"could not write {what} {str(path)!r} ({reason}), nor a copy in "
        f"{', '.join(str(f) for f in fallback_folders())}", None)
