"""Backup archives on a storage: what a standard name says, the side files kept beside each archive.

pve-storage's ``archive_info`` and ``archive_remove``: the ``ctime`` comes from the name (local
time), ``<base>.log`` and ``<archive>.notes`` go with the archive, and an ``<archive>.protected``
marker makes it impossible to remove (it is never pruned).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCHIVE_RE = re.compile(
    r"vzdump-(lxc|openvz|qemu)-([1-9][0-9]{2,8})-(\d{4})_(\d{2})_(\d{2})-(\d{2})_(\d{2})_(\d{2})"
    r"\.(tgz|(?:tar|vma)(?:\.(?:gz|lzo|zst|bz2))?)"
)


@dataclass(frozen=True)
class ArchiveInfo:
    """What a standard archive name says: guest type, VMID, ctime, format (``tar.zst``) and base name."""

    kind: str
    vmid: int
    ctime: int
    format: str
    base: str


def parse_archive_name(name: str) -> ArchiveInfo | None:
    match = ARCHIVE_RE.fullmatch(name)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(3, 9))
    ctime = int(time.mktime((year, month, day, hour, minute, second, 0, 0, -1)))
    fmt = match.group(9)
    return ArchiveInfo(match.group(1), int(match.group(2)), ctime, fmt, name[: -len(fmt) - 1])


def side_files(path: Path) -> dict[str, Path]:
    """The files kept beside archive ``path``: its log, notes and protection marker."""
    info = parse_archive_name(path.name)
    base = info.base if info else path.name
    return {
        "log": path.with_name(f"{base}.log"),
        "notes": path.with_name(f"{path.name}.notes"),
        "protected": path.with_name(f"{path.name}.protected"),
    }


def is_protected(path: Path) -> bool:
    return side_files(path)["protected"].exists()


def listing_fields(path: Path) -> dict[str, Any]:
    """The content listing's extra fields of a backup: ``format``, ``subtype``, ``ctime``, ``notes``, ``protected``."""
    fields: dict[str, Any] = {}
    info = parse_archive_name(path.name)
    if info is not None:
        fields.update(format=info.format, subtype=info.kind, ctime=info.ctime)
    files = side_files(path)
    try:
        notes = files["notes"].read_text(errors="replace").splitlines()
    except OSError:
        notes = None
    if notes:
        fields["notes"] = notes[0]
    if files["protected"].exists():
        fields["protected"] = 1
    return fields


def remove_archive(path: Path) -> None:
    """The archive and its log and notes (a protected one is refused by the caller)."""
    files = side_files(path)
    path.unlink(missing_ok=True)
    files["notes"].unlink(missing_ok=True)
    if parse_archive_name(path.name) is not None:
        files["log"].unlink(missing_ok=True)
