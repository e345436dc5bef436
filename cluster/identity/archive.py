"""What a node identity archive may hold: its members, the files they restore, the one symlink.

Restoring writes root's SSH keys, sshd's host keys, corosync's authkey: an archive must not be
able to write anything else (``~/.ssh/rc``, ``sshd_config``, a path outside the known places)
or smuggle content past the manifest. So the archive's members are exactly the manifest's, each
a regular file with a plain relative name, once; every file entry names a known piece of the
node's identity; the only link is ``authorized_keys`` to the config tree's shared file, as
Proxmox has it. The backup keeps only what the restore accepts.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import Any

from django.conf import settings

from cluster.identity.db import IdentityError

MANIFEST = "manifest.json"
DATABASE_MEMBERS = {"sqlite": "database/cluster.db", "postgresql": "database/cluster.pgdump"}
_MEMBER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")
_NAMES = {
    "corosync-authkey": re.compile(r"authkey"),
    "corosync-conf": re.compile(r"corosync\.conf"),
    "ssh": re.compile(r"id_[a-z0-9_]+(\.pub)?|authorized_keys|known_hosts"),
    "ssh-host": re.compile(r"ssh_host_[a-z0-9]+_key(\.pub)?"),
    "secret-key": re.compile(r"secret_key"),
}


def known_piece(role: str, name: str) -> bool:
    """Whether ``role``/``name`` is a file of a node's identity (keys, authkey, corosync.conf, secret key)."""
    pattern = _NAMES.get(role)
    return pattern is not None and pattern.fullmatch(name) is not None


def known_link(role: str, name: str) -> str | None:
    """Where the one symlink of an identity points (Proxmox's ``/root/.ssh/authorized_keys``), or None."""
    if (role, name) == ("ssh", "authorized_keys"):
        return str(Path(settings.PVE_ETC_DIR) / "priv" / "authorized_keys")
    return None


def members(tar: tarfile.TarFile, archive: Path) -> dict[str, tarfile.TarInfo]:
    """Every member of the archive by name: regular files with plain relative names, each once."""
    found: dict[str, tarfile.TarInfo] = {}
    for info in tar.getmembers():
        name = info.name
        if not _MEMBER_NAME.fullmatch(name) or ".." in name.split("/"):
            raise IdentityError(f"{archive} has a member with a name outside the archive's layout: {name!r}")
        if not info.isreg():
            raise IdentityError(
                f"{archive} member {name} is {_kind(info)}; an identity archive holds regular files only"
            )
        if name in found:
            raise IdentityError(f"{archive} holds member {name} twice")
        found[name] = info
    return found


def _kind(info: tarfile.TarInfo) -> str:
    for test, label in (
        (info.issym, "a symlink"),
        (info.islnk, "a hard link"),
        (info.isdev, "a device file or fifo"),
        (info.isdir, "a directory"),
    ):
        if test():
            return label
    return "not a regular file"


def check_manifest_members(manifest: dict[str, Any], found: dict[str, tarfile.TarInfo], archive: Path) -> None:
    """The manifest's entries name known pieces, and the archive holds exactly the members it lists."""
    engine = manifest["database"].get("engine")
    if manifest["database"].get("member") != DATABASE_MEMBERS.get(str(engine)):
        raise IdentityError(f"{archive}: the manifest names an unexpected database member")
    expected = {MANIFEST, DATABASE_MEMBERS[str(engine)]}
    pieces: set[tuple[str, str]] = set()
    for entry in manifest["files"]:
        if not isinstance(entry, dict):
            raise IdentityError(f"{archive}: the manifest has a malformed file entry")
        role, name = str(entry.get("role")), str(entry.get("name"))
        if not known_piece(role, name):
            raise IdentityError(f"the manifest names {role}/{name}, which is not a file of a node's identity")
        if (role, name) in pieces:
            raise IdentityError(f"the manifest names {role}/{name} twice")
        pieces.add((role, name))
        if "link" in entry:
            target = known_link(role, name)
            if target is None or entry["link"] != target or "member" in entry:
                raise IdentityError(
                    f"the manifest makes {role}/{name} a symlink to {entry['link']!r}; only "
                    f"ssh/authorized_keys may be one, to {known_link('ssh', 'authorized_keys')}"
                )
            continue
        mode = entry.get("mode", 0o600)
        if entry.get("member") != f"files/{role}/{name}" or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise IdentityError(f"the manifest has a malformed entry for {role}/{name}")
        expected.add(entry["member"])
    extra, missing = sorted(set(found) - expected), sorted(expected - set(found))
    if extra:
        raise IdentityError(f"{archive} holds members its manifest does not list: {', '.join(extra[:5])}")
    if missing:
        raise IdentityError(f"{archive} lacks members its manifest lists: {', '.join(missing[:5])}")
