"""A node's files are private to the user running it: the umask, and fixing what older releases left readable.

The data directory holds the cluster database (ticket-signing keys, the CA key, LDAP bind
passwords, password hashes), the node-local database, logs, task logs, sockets and backups.
Every process of a node runs with umask 077 (``manage.py``, the Celery and web entry points,
and ``UMask=0077`` in the systemd units), so what it creates is 0600 or 0700, SQLite's -wal and
-shm files included (SQLite gives them the database file's mode). Files written on purpose for
others say their mode explicitly (the config tree's public files, corosync.conf, public keys).

Django is imported only by :func:`secure_from_settings`: ``manage.py`` sets the umask before
Django is set up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

UMASK = 0o077
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
# Directories of the data directory whose whole content is private (logs, task logs, backups, task secrets).
PRIVATE_TREES = ("log", "tasks", "backup", "task-secrets")


def restrict_umask() -> None:
    """Every file and directory this process (and its children) creates is for its owner only."""
    os.umask(UMASK)


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) 0700; an existing ``path`` loses its group and other bits."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _restrict(path)


def _restrict(path: Path) -> str | None:
    """Drop the group and other bits of ``path`` (never through a symlink); what was fixed, if anything."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode) or not mode & 0o077:
        return None
    os.chmod(path, mode & ~0o077)
    return f"{path} was {mode:04o}, now {mode & ~0o077:04o}"


def _walk(root: Path) -> Iterable[Path]:
    if root.is_symlink() or not root.is_dir():
        return
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            yield Path(directory) / name


def secure_node_files(data_dir: Path, *, log_dir: Path, sqlite_files: Iterable[Path] = ()) -> list[str]:
    """Make an existing node private: the data directory 0700, its files, logs and databases owner-only.

    Run at every start of ``runnode`` and of the replicator (the first unit to start), so a data
    directory made by an older release, or copied with a permissive umask, is fixed before it
    is served. The config tree (``etc/``), the root SSH directory and storages keep their own
    modes: the mirror and ssh-keygen set them on purpose. Returns what was changed.
    """
    fixed: list[str] = []
    make_private_dir(data_dir)
    make_private_dir(log_dir)
    candidates: list[Path] = [data_dir, log_dir, *_walk(log_dir)]
    with contextlib.suppress(FileNotFoundError):
        candidates.extend(entry for entry in data_dir.iterdir() if not entry.is_dir() or entry.is_symlink())
    for name in PRIVATE_TREES:
        tree = data_dir / name
        candidates.extend([tree, *_walk(tree)])
    for database in sqlite_files:
        candidates.extend(database.with_name(database.name + suffix) for suffix in SQLITE_SUFFIXES)
    seen: set[Path] = set()
    for path in candidates:
        if path in seen:
            continue
        seen.add(path)
        try:
            note = _restrict(path)
        except OSError as exc:  # not ours to change (another owner): say so, serve anyway
            fixed.append(f"{path}: cannot restrict its mode ({exc})")
            continue
        if note:
            fixed.append(note)
    return fixed


def secure_from_settings() -> list[str]:
    """:func:`secure_node_files` for this node's settings (its SQLite databases wherever they are)."""
    from django.conf import settings

    sqlite = [
        Path(str(conf["NAME"]))
        for conf in settings.DATABASES.values()
        if str(conf.get("ENGINE", "")).endswith("sqlite3") and conf.get("NAME")
    ]
    fixed = secure_node_files(Path(settings.PVE_DATA_DIR), log_dir=Path(settings.PVE_LOG_DIR), sqlite_files=sqlite)
    for note in fixed:
        log.warning("private file modes: %s", note)
    return fixed
