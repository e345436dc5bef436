"""Node identity restore: Proxmox's node re-install procedure, the restoring half.

Everything is checked before anything is touched: the archive must be readable, hold exactly
the members its manifest lists (regular files only, each once, naming known identity files:
``cluster.identity.archive``), be this node's (``PVE_NODE_NAME``), carry only migrations this
code knows, and every member must match the SHA-256 in its manifest; the database copy must pass SQLite's integrity check and sit at the
manifest's version; the node's replicator must not be running. Only then are files put in place
(atomically, private keys 0600), each replaced file kept first in a dated directory under
``PVE_DATA_DIR/backup``. Started again, the node is itself and catches up with its cluster.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db.migrations.loader import MigrationLoader

from cluster.identity import archive as identity_archive
from cluster.identity import db as identity_db
from cluster.identity.backup import FORMAT, FORMAT_VERSION, MANIFEST, ROLE_LABELS, role_path
from cluster.identity.db import IdentityError
from replicator import client
from replicator.files import atomic_symlink, atomic_write

MAX_FILE = 1 << 20  # identity files are keys and small configs
READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, ValueError, KeyError, TypeError)


def replicator_running() -> bool:
    """Whether this node's replicator answers on its unix socket (a stale socket file does not)."""
    return client.accepts(settings.PVE_REPLICATOR_SOCKET, timeout=2)


def restore_backup(archive: Path, *, allow_running: bool = False) -> list[str]:
    """Check ``archive`` whole, then put this node's identity back from it; returns what was done."""
    try:
        tar = tarfile.open(archive, "r:gz")  # noqa: SIM115  (closed below)
    except READ_ERRORS as exc:
        raise IdentityError(f"{archive} is not a readable identity archive: {exc}") from None
    with tar:
        try:
            found = identity_archive.members(tar, archive)
        except READ_ERRORS as exc:
            raise IdentityError(f"{archive} is not a readable identity archive: {exc}") from None
        manifest = _manifest(tar, archive)
        try:
            identity_archive.check_manifest_members(manifest, found, archive)
            _check_compatible(manifest)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IdentityError(f"{archive} has a malformed manifest: {exc!r}") from None
        running = replicator_running()
        if running and not allow_running:
            raise IdentityError(
                f"the replicator of node {settings.PVE_NODE_NAME} is running (it answers on "
                f"{settings.PVE_REPLICATOR_SOCKET}); stop the node first (systemctl stop pve-django.target, "
                "or stop runnode), or give --allow-running"
            )
        kind = manifest["database"]["engine"]
        staging_parent = identity_db.sqlite_path().parent if kind == "sqlite" else Path(settings.PVE_DATA_DIR)
        staging_parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=staging_parent, prefix=".identity-restore-") as scratch:
            try:
                database = _stage_database(tar, manifest, Path(scratch))
                files = [_stage_file(tar, entry) for entry in manifest["files"]]
            except IdentityError:
                raise
            except READ_ERRORS as exc:
                raise IdentityError(f"{archive} is damaged: {exc}") from None
            lines = _install(manifest, database, files)
    if running:
        lines.append("WARNING: the replicator was running on the replaced database: restart it now")
    return lines


def _manifest(tar: tarfile.TarFile, archive: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(_read_member(tar, MANIFEST, MAX_FILE))
    except READ_ERRORS as exc:
        raise IdentityError(f"{archive} is not a readable identity archive: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IdentityError(f"{archive} is not a node identity archive")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IdentityError(f"{archive} has format version {manifest.get('format_version')}; this code reads 1")
    if not isinstance(manifest.get("database"), dict) or not isinstance(manifest.get("files"), list):
        raise IdentityError(f"{archive} has an incomplete manifest")
    return manifest


def _check_compatible(manifest: dict[str, Any]) -> None:
    """This node's archive, for this database engine, written by code no newer than this."""
    node = settings.PVE_NODE_NAME
    if manifest.get("node") != node:
        raise IdentityError(
            f"the archive holds the identity of node {manifest.get('node')!r}, this is node {node!r} "
            "(PVE_NODE_NAME): a node is restored as itself only"
        )
    engine = identity_db.engine()
    if manifest["database"].get("engine") != engine:
        raise IdentityError(
            f"the archive holds a {manifest['database'].get('engine')} database; this node's cluster database is {engine}"
        )
    known = {f"{app}.{name}" for app, name in MigrationLoader(None, ignore_no_migrations=True).disk_migrations}
    unknown = sorted(f"{app}.{name}" for app, name in manifest["database"].get("migrations", []))
    unknown = [label for label in unknown if label not in known]
    if unknown:
        raise IdentityError(
            f"the archive's database has migrations this code does not know ({', '.join(unknown[:5])}): "
            "install the version that wrote it first"
        )


def _read_member(tar: tarfile.TarFile, name: str, limit: int) -> bytes:
    handle = _open_member(tar, name, limit)
    with handle:
        return handle.read()


def _open_member(tar: tarfile.TarFile, name: str, limit: int) -> IO[bytes]:
    info = tar.getmember(name)
    if not info.isfile() or info.size > limit:
        raise IdentityError(f"archive member {name} is not a regular file of at most {limit} bytes")
    handle = tar.extractfile(info)
    if handle is None:
        raise IdentityError(f"archive member {name} cannot be read")
    return handle


def _stage_database(tar: tarfile.TarFile, manifest: dict[str, Any], scratch: Path) -> Path:
    """The archived database in ``scratch``, its checksum, integrity and version checked."""
    spec = manifest["database"]
    staged = scratch / ("cluster.db" if spec["engine"] == "sqlite" else "cluster.pgdump")
    digest = hashlib.sha256()
    with _open_member(tar, str(spec["member"]), 1 << 40) as source, open(staged, "wb") as out:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != spec["sha256"]:
        raise IdentityError("the archived database does not match its checksum in the manifest (damaged archive)")
    if spec["engine"] == "sqlite":
        found = identity_db.check_sqlite(staged)
        if (found["version"], found["hash"]) != (spec["version"], spec["hash"]):
            raise IdentityError(
                f"the archived database is at version {found['version']}, the manifest says {spec['version']}"
            )
    else:
        identity_db.check_postgresql_dump(staged)
    return staged


def _stage_file(tar: tarfile.TarFile, entry: dict[str, Any]) -> tuple[dict[str, Any], bytes | None]:
    """A file entry with its bytes (None for a symlink), its name and checksum checked."""
    role, name = str(entry["role"]), str(entry["name"])
    if role not in ROLE_LABELS or not name or "/" in name or name in (".", ".."):
        raise IdentityError(f"the manifest names an invalid file {role}/{name}")
    if "link" in entry:
        if not isinstance(entry["link"], str) or not entry["link"]:
            raise IdentityError(f"the manifest names an invalid symlink {role}/{name}")
        return entry, None
    data = _read_member(tar, str(entry["member"]), MAX_FILE)
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise IdentityError(f"{entry['member']} does not match its checksum in the manifest (damaged archive)")
    return entry, data


def _mode(entry: dict[str, Any]) -> int:
    """Secrets for the owner only (0600, or 0400 as corosync's authkey); public files at most 0644."""
    mode = int(entry.get("mode", 0o600))
    if entry.get("private", True):
        return mode & 0o600 if mode & 0o400 else 0o600
    return mode & 0o644 if mode & 0o400 else 0o644


class _Backup:
    """The dated directory replaced files are kept in, made when the first one is."""

    def __init__(self) -> None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        self.path = Path(settings.PVE_DATA_DIR) / "backup" / f"identity-restore-{stamp}"
        self.used = False

    def directory(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path.mkdir(exist_ok=True, mode=0o700)
        self.used = True
        return self.path

    def keep(self, role: str, path: Path) -> None:
        where = self.directory() / role
        where.mkdir(exist_ok=True, mode=0o700)
        shutil.copy2(path, where / path.name, follow_symlinks=False)


def _install(manifest: dict[str, Any], database: Path, files: list[tuple[dict[str, Any], bytes | None]]) -> list[str]:
    backup = _Backup()
    lines: list[str] = []
    for entry, data in files:
        target = role_path(entry["role"], entry["name"])
        if data is None:
            lines.append(_install_link(entry, target, backup))
            continue
        mode = _mode(entry)
        if target.is_file() and not target.is_symlink():
            current = target.stat()
            if (current.st_mode & 0o777) == mode and target.read_bytes() == data:
                lines.append(f"unchanged {target}")
                continue
            backup.keep(entry["role"], target)
        if entry["role"] == "ssh":
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # sshd wants the key directory private
        atomic_write(target, data, mode=mode)
        lines.append(f"restored {ROLE_LABELS[entry['role']]} {target} ({mode:04o})")
    lines.extend(_install_database(manifest, database, backup))
    lines.extend(f"not in the archive: {note}" for note in manifest.get("missing", []))
    if backup.used:
        lines.append(f"replaced files are kept in {backup.path}")
    lines.append(_next_steps(manifest))
    return lines


def _install_link(entry: dict[str, Any], target: Path, backup: _Backup) -> str:
    if target.is_symlink() and os.readlink(target) == entry["link"]:
        return f"unchanged {target} -> {entry['link']}"
    if target.exists() or target.is_symlink():
        backup.keep(entry["role"], target)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_symlink(target, entry["link"])
    return f"restored {target} -> {entry['link']}"


def _install_database(manifest: dict[str, Any], staged: Path, backup: _Backup) -> list[str]:
    spec = manifest["database"]
    restored = f"restored the cluster database at version {spec['version']} (hash {spec['hash'][:16]})"
    if spec["engine"] != "sqlite":
        previous, found = identity_db.install_postgresql(staged, backup.directory())
        if (found["version"], found["hash"]) != (spec["version"], spec["hash"]):
            raise IdentityError(f"the restored database is at version {found['version']}, expected {spec['version']}")
        return [
            f"{restored} into PostgreSQL database {settings.DATABASES['cluster']['NAME']}",
            f"the database it replaced is dumped to {previous}",
        ]
    target = identity_db.sqlite_path()
    lines = [f"{restored} to {target}"]
    if target.exists():
        try:
            lines.append(f"the database it replaced was at version {_sqlite_facts(target)['version']}")
        except sqlite3.DatabaseError as exc:
            lines.append(f"the database it replaced was unreadable: {exc}")
    kept = identity_db.install_sqlite(staged, backup.directory() if _any_database_file(target) else None)
    if kept is not None:
        lines.append(f"the database it replaced is kept in {kept}")
    try:
        found = _sqlite_facts(target)
    except sqlite3.DatabaseError as exc:
        raise IdentityError(f"the restored database cannot be read: {exc}") from None
    if (found["version"], found["hash"]) != (spec["version"], spec["hash"]):
        raise IdentityError(f"the restored database is at version {found['version']}, expected {spec['version']}")
    return lines


def _sqlite_facts(path: Path) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(identity_db.read_only_uri(path), uri=True)) as db:
        return identity_db.facts(db.cursor())


def _any_database_file(target: Path) -> bool:
    return any(target.with_name(target.name + suffix).exists() for suffix in ("", "-wal", "-shm"))


def _next_steps(manifest: dict[str, Any]) -> str:
    node = manifest["node"]
    if any(entry["role"] == "corosync-conf" for entry in manifest["files"]):
        start = "start corosync (systemctl start corosync), then the node"
        outcome = (
            f"{node} rejoins cluster {manifest.get('cluster_name') or ''} as itself and catches up with what it missed"
        )
    else:
        start, outcome = "start the node", f"{node} is itself again"
    return (
        f"next: {start} (systemctl start pve-django.target, or manage.py runnode, which also migrates the "
        f"node-local database); {outcome}"
    )
