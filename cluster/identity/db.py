"""The cluster database inside a node identity archive: a consistent copy, its facts, putting it back.

SQLite is copied with its online backup API (the replicator and readers keep going; the copy is
one transactionally consistent state). PostgreSQL is dumped with ``pg_dump`` inside a snapshot
exported from the transaction the facts are read in, so the manifest's version is the dump's.
The facts (head version and hash of the replicated history, cluster name, this node's
certificate fingerprint, applied migrations) are read with plain SQL, so a restore can check a
copy without pointing Django at it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections, transaction

from cluster.models import CorosyncConfig, Node
from replicator.applier import GENESIS_HASH
from replicator.files import fsync_directory
from replicator.models import ChangeLogEntry

CLUSTER = "cluster"
PG_TIMEOUT = 3600


class IdentityError(Exception):
    """A backup or restore that cannot go ahead; nothing was changed when it is raised before installing."""


def engine() -> str:
    """``sqlite`` or ``postgresql``: how the ``cluster`` alias is stored."""
    name = str(settings.DATABASES[CLUSTER]["ENGINE"])
    if name.endswith("sqlite3"):
        return "sqlite"
    if name.endswith("postgresql"):
        return "postgresql"
    raise IdentityError(f"cluster database engine {name} is not supported by identity backups")


def sqlite_path() -> Path:
    """The cluster database file (``sqlite:////abs`` URLs leave a leading ``//`` that resolve() folds)."""
    return Path(str(settings.DATABASES[CLUSTER]["NAME"])).resolve()


def read_only_uri(path: Path) -> str:
    return f"{path.resolve().as_uri()}?mode=ro"


def facts(cursor: Any) -> dict[str, Any]:
    """What the manifest records of a database: replicated head, cluster name, node fingerprints, migrations."""
    cursor.execute(f'SELECT "version", "hash" FROM "{ChangeLogEntry._meta.db_table}" ORDER BY "version" DESC LIMIT 1')
    head = cursor.fetchone() or (0, GENESIS_HASH)
    cursor.execute(f'SELECT "cluster_name" FROM "{CorosyncConfig._meta.db_table}"')
    row = cursor.fetchone()
    cursor.execute(f'SELECT "name", "ssl_fingerprint" FROM "{Node._meta.db_table}"')
    fingerprints = {str(name): str(fingerprint) for name, fingerprint in cursor.fetchall()}
    cursor.execute('SELECT "app", "name" FROM "django_migrations"')
    migrations = sorted([str(app), str(name)] for app, name in cursor.fetchall())
    return {
        "version": int(head[0]),
        "hash": str(head[1]),
        "cluster_name": str(row[0]) if row else "",
        "fingerprints": fingerprints,
        "migrations": migrations,
    }


# --- SQLite ------------------------------------------------------------------------------


def copy_sqlite(source: Path, target: Path) -> dict[str, Any]:
    """Copy a live SQLite database into ``target`` (one self-contained file); returns its facts."""
    if not source.exists():
        raise IdentityError(f"no cluster database at {source} - nothing to back up (has this node ever started?)")
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # no -wal beside the copy: the archive holds one file
            return facts(dst.cursor())
        finally:
            dst.close()
    finally:
        src.close()


def check_sqlite(path: Path) -> dict[str, Any]:
    """Facts of a staged copy, after SQLite's own integrity check."""
    try:
        db = sqlite3.connect(read_only_uri(path), uri=True)
        try:
            verdict = db.execute("PRAGMA integrity_check").fetchone()
            if not verdict or verdict[0] != "ok":
                raise IdentityError(f"the archived database fails SQLite's integrity check: {verdict}")
            return facts(db.cursor())
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise IdentityError(f"the archived database is not a usable SQLite database: {exc}") from None


def install_sqlite(staged: Path, backup_dir: Path | None) -> Path | None:
    """Put ``staged`` in place of the cluster database; the old one (with its -wal, -shm) moves to ``backup_dir``.

    The old WAL must go with its database: left beside the new file it would be replayed into it.
    """
    target = sqlite_path()
    kept: Path | None = None
    old = [target.with_name(target.name + suffix) for suffix in ("", "-wal", "-shm")]
    if any(path.exists() for path in old):
        if backup_dir is None:
            raise IdentityError("internal error: no backup directory for the current database")
        kept = backup_dir / "database"
        kept.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in old:
            if path.exists():
                shutil.move(path, kept / path.name)
    os.chmod(staged, 0o600)  # the database holds private keys (certificates, tickets)
    os.replace(staged, target)
    fsync_directory(target.parent)
    return kept


# --- PostgreSQL --------------------------------------------------------------------------


def _pg_env() -> dict[str, str]:
    conf = settings.DATABASES[CLUSTER]
    env = {**os.environ, "PGDATABASE": str(conf["NAME"])}
    for key, variable in (("HOST", "PGHOST"), ("PORT", "PGPORT"), ("USER", "PGUSER"), ("PASSWORD", "PGPASSWORD")):
        if conf.get(key):
            env[variable] = str(conf[key])
    return env


def _run_pg(argv: list[str]) -> None:
    if shutil.which(argv[0]) is None:
        raise IdentityError(f"{argv[0]} is not installed (Debian: postgresql-client); it is needed for PostgreSQL")
    result = subprocess.run(argv, env=_pg_env(), capture_output=True, text=True, timeout=PG_TIMEOUT)
    if result.returncode != 0:
        raise IdentityError(f"{argv[0]} failed: {result.stderr.strip()[-2000:]}")


def dump_postgresql(target: Path) -> dict[str, Any]:
    """``pg_dump`` of the cluster database in the snapshot its facts are read from."""
    connection = connections[CLUSTER]
    with transaction.atomic(using=CLUSTER), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = str(cursor.fetchone()[0])
        found = facts(cursor)
        _run_pg(["pg_dump", "--format=custom", f"--snapshot={snapshot}", f"--file={target}"])
    os.chmod(target, 0o600)
    return found


def check_postgresql_dump(path: Path) -> None:
    """A staged dump ``pg_restore`` can read (its table of contents)."""
    _run_pg(["pg_restore", "--list", str(path)])


def install_postgresql(staged: Path, backup_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Dump the current database into ``backup_dir``, restore ``staged`` over it; returns the dump and the new facts."""
    kept = backup_dir / "database"
    kept.mkdir(parents=True, exist_ok=True, mode=0o700)
    previous = kept / "cluster.pgdump"
    _run_pg(["pg_dump", "--format=custom", f"--file={previous}"])
    os.chmod(previous, 0o600)
    name = str(settings.DATABASES[CLUSTER]["NAME"])
    _run_pg(
        ["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction", f"--dbname={name}", str(staged)]
    )
    connection = connections[CLUSTER]
    connection.close()
    with connection.cursor() as cursor:
        return previous, facts(cursor)
