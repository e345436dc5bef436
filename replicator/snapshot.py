"""Whole-state snapshots: rows for a full sync, a state checksum, and the diverged-state file.

A row is ``[model label, primary key, version, {attname: value}]`` with values encoded as
change sets encode them, so installing a snapshot reuses the applier's SQL and conversions.
Rows come in a fixed order (model label, then primary key), so two members holding the same
state produce the same bytes and the same checksum.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.db import connections, transaction

from replicator.changeset import _encode_value, _payload_fields
from replicator.files import atomic_file
from replicator.models import REPLICATED_MODELS, ChangeLogEntry
from replicator.rowsql import ModelSQL

CLUSTER = "cluster"
Row = list[Any]


def rows(labels: set[str] | None = None) -> Iterator[Row]:
    """Every replicated row (of the models ``labels``, if given), in canonical order."""
    for label in sorted(REPLICATED_MODELS):
        if labels is not None and label not in labels:
            continue
        model = REPLICATED_MODELS[label]
        fields = [f for f in _payload_fields(model) if not f.primary_key]
        for instance in model.objects.using(CLUSTER).order_by("pk").iterator(chunk_size=2000):
            yield [
                label,
                _encode_value(model._meta.pk, instance),
                int(instance.version),
                {f.attname: _encode_value(f, instance) for f in fields},
            ]


def encode_row(row: Row) -> bytes:
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def checksum() -> tuple[str, int]:
    """(sha256 over every row, row count): equal on members holding the same state."""
    digest = hashlib.sha256()
    count = 0
    for row in rows():
        digest.update(encode_row(row))
        digest.update(b"\n")
        count += 1
    return digest.hexdigest(), count


def install(snapshot: list[Row], head: tuple[int, str, str, str, bytes], sql_for: Any) -> None:
    """Replace the whole replicated state with ``snapshot`` in one transaction.

    ``head`` is the sender's newest change log entry (version, id, origin, hash, payload); it
    becomes this node's only log entry, so the history continues from the sender's head.
    Foreign keys are checked at commit (Django creates them deferrable), so order is free.
    """
    connection = connections[CLUSTER]
    with transaction.atomic(using=CLUSTER), connection.cursor() as cursor:
        quote = connection.ops.quote_name
        _delete_all(cursor, quote)
        groups: dict[tuple[str, tuple[str, ...]], list[list[Any]]] = {}
        for label, key, version, fields in snapshot:
            sql: ModelSQL = sql_for(label)
            _pk, db_pk = sql.pk_value(key)
            values = sql.values(fields, create=True)
            groups.setdefault((label, tuple(values)), []).append([db_pk, version, *sql.db_values(values)])
        for (label, attnames), params in groups.items():
            cursor.executemany(sql_for(label).insert_sql(attnames), params)
        cursor.execute(
            f"INSERT INTO {quote(ChangeLogEntry._meta.db_table)} (version, changeset_id, origin, hash, payload) "
            "VALUES (%s, %s, %s, %s, %s)",
            list(head),
        )


def wipe() -> None:
    """Delete every replicated row and the change log: the node starts from version 0 (before a join)."""
    connection = connections[CLUSTER]
    with transaction.atomic(using=CLUSTER), connection.cursor() as cursor:
        _delete_all(cursor, connection.ops.quote_name)


def _delete_all(cursor: Any, quote: Any) -> None:
    for model in REPLICATED_MODELS.values():
        cursor.execute(f"DELETE FROM {quote(model._meta.db_table)}")
    cursor.execute(f"DELETE FROM {quote(ChangeLogEntry._meta.db_table)}")


def prune_backups(directory: Path, keep: int = 10) -> None:
    """Keep the ``keep`` newest ``cluster-*.json`` files of a backup directory (Proxmox keeps 10 dumps)."""
    files = sorted(directory.glob("cluster-*.json"), key=lambda path: path.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


def save_diverged(directory: Path, version: int, head_hash: str, reason: str) -> Path:
    """Keep the losing side's state as a dated file before it is replaced; returns its path."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    path = directory / f"cluster-{stamp}-v{version}-{head_hash[:12]}.json"
    with atomic_file(path, mode=0o600) as out:  # durable before the state it keeps is replaced
        out.write(json.dumps({"version": version, "hash": head_hash, "reason": reason}).encode() + b"\n")
        for row in rows():
            out.write(encode_row(row) + b"\n")
        for entry in ChangeLogEntry.objects.using(CLUSTER).filter(version__gt=version - 1000).order_by("version"):
            out.write(
                json.dumps(
                    {"changelog": entry.version, "origin": entry.origin, "payload": bytes(entry.payload).decode()}
                ).encode()
                + b"\n"
            )
    return path
