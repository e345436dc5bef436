"""Files replaced atomically and durably: a reader sees the old content or the new, never a part.

Every file the stack writes in place goes through here: the config tree mirror, corosync.conf
and the authkey, identity backups and restores, diverged-state files, task secrets. The new
content goes to a temporary file in the same directory that has its final mode (and owner)
before the first byte is written, so a secret is never readable by others, not even briefly;
it is fsynced, renamed over the target, and the directory is fsynced so that the rename itself
survives a power cut (DESIGN.md, "The config tree mirror"). No Django here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

Owner = tuple[int, int]


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (a rename into it, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, *, mode: int = 0o600, owner: Owner | None = None) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; it replaces ``path`` when the block ends.

    ``mode`` (and ``owner``, a ``(uid, gid)`` pair) are set on the temporary file before
    anything is written, whatever the umask. If the block raises, ``path`` is left as it was
    and the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, *owner)
            yield handle
            handle.flush()
            os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_directory(path.parent)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, owner: Owner | None = None) -> None:
    """Replace ``path`` with ``data``: write, fsync, rename, fsync the directory (see :func:`atomic_file`)."""
    with atomic_file(path, mode=mode, owner=owner) as handle:
        handle.write(data)


def atomic_symlink(path: Path, target: str) -> None:
    """Make ``path`` a symlink to ``target``, replacing whatever is there in one rename; the directory is fsynced."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
