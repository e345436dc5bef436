"""Node identity backup: Proxmox's node re-install procedure, the saving half.

Proxmox documents re-installing a node by saving its /etc/pve database, /etc/corosync,
/root/.ssh and the node's keys, and putting them back after the re-install: the node comes back
as itself (same certificate, SSH keys and corosync identity) and catches up with the cluster.
The archive (tar.gz, mode 0600, written atomically) holds exactly that: a consistent copy of the
cluster database, the corosync authkey and corosync.conf, the root SSH key pair, the sshd host
keys, Django's secret key, and a manifest saying whose it is, at which replicated version, and
the SHA-256 of every member. ``cluster.identity.restore`` is the other half.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import platform
import sqlite3
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import django
from django.conf import settings

from cluster.identity import db as identity_db
from cluster.identity.archive import MANIFEST, known_link, known_piece
from cluster.identity.db import IdentityError
from replicator.files import atomic_file

FORMAT = "pve-django-node-identity"
FORMAT_VERSION = 1

ROLE_LABELS = {
    "corosync-authkey": "corosync authkey",
    "corosync-conf": "corosync.conf",
    "ssh": "root SSH keys",
    "ssh-host": "sshd host keys",
    "secret-key": "Django secret key",
}

__all__ = ["IdentityError", "create_backup", "role_path"]


@dataclass(frozen=True)
class Piece:
    """One identity file of this node: its role, its name inside the role, where it is."""

    role: str
    name: str
    path: Path

    @property
    def member(self) -> str:
        return f"files/{self.role}/{self.name}"

    @property
    def private(self) -> bool:
        """Everything but public keys and corosync.conf is a secret (restored 0600)."""
        return self.role != "corosync-conf" and not self.name.endswith(".pub")


def role_path(role: str, name: str) -> Path:
    """Where a piece lives on this node, from the settings (a re-installed node may use other paths)."""
    if role == "corosync-authkey":
        return Path(settings.PVE_COROSYNC_AUTHKEY)
    if role == "corosync-conf":
        return Path(settings.PVE_COROSYNC_CONF)
    if role == "ssh":
        return Path(settings.PVE_SSH_DIR) / name
    if role == "ssh-host":
        return Path(settings.PVE_SSH_HOST_KEY).parent / name
    if role == "secret-key":
        return Path(settings.PVE_DATA_DIR) / "secret_key"
    raise IdentityError(f"unknown piece {role!r} in the archive")


def identity_pieces() -> tuple[list[Piece], list[str]]:
    """This node's identity files that exist, and a note for each optional one that does not."""
    found: list[Piece] = []
    notes: list[str] = []
    for role, name in (("corosync-authkey", "authkey"), ("corosync-conf", "corosync.conf")):
        path = role_path(role, name)
        if path.is_file():
            found.append(Piece(role, name, path))
        else:
            notes.append(f"no {ROLE_LABELS[role]} at {path} (not a cluster member?)")
    ssh_dir = Path(settings.PVE_SSH_DIR)
    for path in sorted(ssh_dir.iterdir()) if ssh_dir.is_dir() else []:
        if _kept("ssh", path):
            found.append(Piece("ssh", path.name, path))
        else:
            notes.append(f"skipped {path} (keys, authorized_keys and known_hosts of the SSH directory are kept)")
    if not any(piece.role == "ssh" for piece in found):
        notes.append(f"no root SSH keys in {ssh_dir}")
    host_dir = Path(settings.PVE_SSH_HOST_KEY).parent
    host_keys = sorted(host_dir.glob("ssh_host_*")) if host_dir.is_dir() else []
    found.extend(Piece("ssh-host", p.name, p) for p in host_keys if _kept("ssh-host", p))
    if not host_keys:
        notes.append(f"no sshd host keys beside {settings.PVE_SSH_HOST_KEY}")
    secret = role_path("secret-key", "secret_key")
    if secret.is_file():
        found.append(Piece("secret-key", "secret_key", secret))
    else:
        notes.append(f"no secret key at {secret} (PVE_SECRET_KEY set in the environment?)")
    return found, notes


def _kept(role: str, path: Path) -> bool:
    """A file the restore accepts: a known identity file, a regular file or the one known symlink."""
    if not known_piece(role, path.name):
        return False
    if path.is_symlink():
        return os.readlink(path) == known_link(role, path.name)
    return path.is_file()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _tarinfo(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, int(datetime.datetime.now(datetime.UTC).timestamp())
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def create_backup(target: Path, *, replace: bool = False) -> list[str]:
    """Write this node's identity archive to ``target``; returns what it holds and what it lacks."""
    target = Path(target).absolute()
    if target.exists() and not replace:
        raise IdentityError(f"{target} exists (give --force to replace it)")
    if not target.parent.is_dir():
        raise IdentityError(f"directory {target.parent} does not exist")
    pieces, notes = identity_pieces()
    kind = identity_db.engine()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".identity-") as scratch:
        database = Path(scratch) / ("cluster.db" if kind == "sqlite" else "cluster.pgdump")
        if kind == "sqlite":
            facts = identity_db.copy_sqlite(identity_db.sqlite_path(), database)
        else:
            facts = identity_db.dump_postgresql(database)
        node = str(settings.PVE_NODE_NAME)
        if node not in facts["fingerprints"]:
            notes.append(f"the database has no row for node {node} yet (backed up before its first start?)")
        now = datetime.datetime.now(datetime.UTC)
        files: list[dict[str, Any]] = []
        for piece in pieces:
            entry: dict[str, Any] = {"role": piece.role, "name": piece.name, "path": str(piece.path)}
            if piece.path.is_symlink():
                entry["link"] = os.readlink(piece.path)
            else:
                entry.update(
                    member=piece.member,
                    mode=stat.S_IMODE(piece.path.stat().st_mode),
                    size=piece.path.stat().st_size,
                    sha256=sha256_file(piece.path),
                    private=piece.private,
                )
            files.append(entry)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "node": node,
            "cluster_name": facts["cluster_name"] or _conf_cluster_name(),
            "created": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "versions": {
                "python": platform.python_version(),
                "django": django.get_version(),
                "sqlite": sqlite3.sqlite_version,
            },
            "database": {
                "engine": kind,
                "member": f"database/{database.name}",
                "size": database.stat().st_size,
                "sha256": sha256_file(database),
                "version": facts["version"],
                "hash": facts["hash"],
                "node_fingerprint": facts["fingerprints"].get(node, ""),
                "migrations": facts["migrations"],
            },
            "files": files,
            "missing": notes,
        }
        _write_archive(target, manifest, database, pieces)
    lines = [
        f"node {node} of cluster {manifest['cluster_name'] or '(none)'}: database at version {facts['version']} "
        f"(hash {facts['hash'][:16]}), {kind}",
        *(f"kept {ROLE_LABELS[p.role]}: {p.path}" for p in pieces),
        *(f"not kept: {note}" for note in notes),
        f"wrote {target} (mode 0600)",
    ]
    if target.is_relative_to(Path(settings.PVE_DATA_DIR)):
        lines.append(f"WARNING: {target} is inside the data directory; copy it off this node before re-installing")
    return lines


def _conf_cluster_name() -> str:
    """The cluster name from corosync.conf, for a node whose database does not name its cluster."""
    try:
        text = Path(settings.PVE_COROSYNC_CONF).read_text(errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == "cluster_name":
            return value.strip()
    return ""


def _write_archive(target: Path, manifest: dict[str, Any], database: Path, pieces: list[Piece]) -> None:
    """tar.gz written beside ``target`` with mode 0600, fsync'd, renamed over it: never a partial archive."""
    with atomic_file(target, mode=0o600) as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        tar.addfile(_tarinfo(MANIFEST, len(body), 0o600), io.BytesIO(body))
        with open(database, "rb") as handle:
            size = manifest["database"]["size"]
            tar.addfile(_tarinfo(manifest["database"]["member"], size, 0o600), handle)
        by_member = {entry.get("member"): entry for entry in manifest["files"]}
        for piece in pieces:
            entry = by_member.get(piece.member)
            if entry is None:  # a symlink: recorded in the manifest only
                continue
            data = piece.path.read_bytes()
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise IdentityError(f"{piece.path} changed while it was being backed up; run the backup again")
            tar.addfile(_tarinfo(piece.member, len(data), entry["mode"]), io.BytesIO(data))
