"""Apply delivered change sets in delivery order: one savepoint each, one fsync'd commit per batch.

Group commit: the applier takes every change set waiting in its queue (up to a cap), applies
each inside its own savepoint (a failed one rolls back alone, with the same verdict on every
node), then commits once. Answers go out only after the commit, so an acknowledged write is
durable. Apply is deterministic: everything it writes comes from the change set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, connections, models, transaction

from replicator import faults
from replicator.exceptions import ConflictError, InvalidChangeSetError, ReplicationError
from replicator.models import REPLICATED_MODELS, ChangeLogEntry, ReplicatedModel
from replicator.rowsql import ModelSQL

log = logging.getLogger(__name__)

CLUSTER = "cluster"
GENESIS_HASH = "0" * 64
MAX_BATCH = 512
PRUNE_EVERY = 1000  # versions
ChangedKeys = set[tuple[str, Any]]
Result = dict[str, Any]
Delivered = tuple[str, bytes]


def chain_hash(previous: str, payload: bytes) -> str:
    """The hash chain over the applied history: sha256(previous head || change set bytes)."""
    return hashlib.sha256(previous.encode() + b"\n" + payload).hexdigest()


class CorruptHistoryError(ReplicationError):
    """The stored history does not verify; the node must not serve this database."""


class NotDurableError(ReplicationError):
    """The cluster database would acknowledge commits it has not flushed to disk."""


SQLITE_SYNCHRONOUS = {0: "off", 1: "normal", 2: "full", 3: "extra"}


def durability() -> dict[str, str]:
    """How the cluster database makes a commit durable; NotDurableError if it does not.

    An acknowledged write must survive power loss, so every commit is flushed before the
    replicator answers: SQLite with ``synchronous`` FULL (the WAL is fsynced at each commit),
    PostgreSQL with ``synchronous_commit`` on (set on every connection, see ``portal.settings``)
    and ``fsync`` on in the server.
    """
    connection = connections[CLUSTER]
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA journal_mode")
            journal = str(cursor.fetchone()[0])
            cursor.execute("PRAGMA synchronous")
            level = int(cursor.fetchone()[0])
            facts = {
                "engine": "sqlite",
                "journal_mode": journal,
                "synchronous": SQLITE_SYNCHRONOUS.get(level, str(level)),
            }
            durable = level >= 2
        elif connection.vendor == "postgresql":
            facts = {"engine": "postgresql"}
            for name in ("synchronous_commit", "fsync"):
                cursor.execute(f"SHOW {name}")
                facts[name] = str(cursor.fetchone()[0])
            durable = facts["synchronous_commit"] != "off" and facts["fsync"] == "on"
        else:
            raise NotDurableError(f"unsupported cluster database engine {connection.vendor!r}")
    if not durable:
        settings_text = ", ".join(f"{key}={value}" for key, value in facts.items())
        raise NotDurableError(
            f"the cluster database does not flush every commit to disk ({settings_text}): "
            "acknowledged writes could be lost on power failure; refusing to start"
        )
    return facts


class Applier:
    """Owns the cluster database: the only code that writes it."""

    def __init__(self, *, retain: int, on_applied: Callable[[int, ChangedKeys], None] | None = None) -> None:
        self.retain = retain
        self.on_applied = on_applied
        self.waiters: dict[str, Future[Result]] = {}
        self.waiters_lock = threading.Lock()
        # The head of the history is its newest change log entry (pruning always keeps it).
        self.version, self.hash = 0, GENESIS_HASH
        self.reload_head()
        self._sql: dict[type[ReplicatedModel], ModelSQL] = {}
        self.durability = durability()
        self.verify_history()

    def verify_history(self, window: int = 10_000) -> None:
        """Refuse to start on a database whose change log does not chain up to its head."""
        entries = ChangeLogEntry.objects.filter(version__gt=self.version - window).order_by("version")
        previous: ChangeLogEntry | None = None
        for entry in entries.iterator(chunk_size=1000):
            payload = bytes(entry.payload)
            if previous is None:
                broken = entry.version == 1 and entry.hash != chain_hash(GENESIS_HASH, payload)
            else:
                broken = entry.version != previous.version + 1 or entry.hash != chain_hash(previous.hash, payload)
            if broken:
                raise CorruptHistoryError(f"change log broken at version {entry.version}")
            previous = entry

    # --- waiting writers ----------------------------------------------------------------

    def expect(self, changeset_id: str) -> Future[Result]:
        """Register interest in the result of a change set before submitting it."""
        future: Future[Result] = Future()
        with self.waiters_lock:
            self.waiters[changeset_id] = future
        return future

    def forget(self, changeset_id: str) -> None:
        with self.waiters_lock:
            self.waiters.pop(changeset_id, None)

    def fail(self, payloads: list[bytes], code: str, error: str) -> None:
        """Answer the writers of change sets that will not be applied."""
        self._answer([_parse(payload)[0] for payload in payloads], [_failure(code, error)] * len(payloads))

    # --- history -------------------------------------------------------------------------

    def oldest_retained(self) -> int:
        """The lowest version whose change set is still in the log (head + 1 when empty)."""
        first = ChangeLogEntry.objects.order_by("version").values_list("version", flat=True).first()
        return first if first is not None else self.version + 1

    def hash_at(self, version: int) -> str | None:
        """The history hash after ``version``; None when that entry has been pruned."""
        if version == 0:
            return GENESIS_HASH
        if version == self.version:
            return self.hash
        return ChangeLogEntry.objects.filter(version=version).values_list("hash", flat=True).first()

    def reload_head(self) -> None:
        head = ChangeLogEntry.objects.order_by("-version").values_list("version", "hash").first()
        self.version, self.hash = head if head is not None else (0, GENESIS_HASH)

    # --- apply ---------------------------------------------------------------------------

    def apply_batch(self, batch: list[Delivered], *, replay: bool = False) -> list[Result]:
        """Apply a batch; returns one result per change set, in order.

        ``replay``: change sets another node already applied (a sync delta); they cannot fail
        on an identical state, so they skip the per-change-set savepoints.
        """
        parsed = [_parse(payload) for _, payload in batch]
        version, head = self.version, self.hash
        results: list[Result] = []
        changed: ChangedKeys = set()
        connection = connections[CLUSTER]
        try:
            with transaction.atomic(using=CLUSTER), connection.cursor() as cursor:
                # A lone change set needs no savepoint: its failure rolls back the whole transaction.
                savepoint = len(batch) > 1 and not replay
                for (origin, payload), (cs_id, cs) in zip(batch, parsed, strict=True):
                    result, keys = self._apply_one(cursor, origin, payload, cs_id, cs, version + 1, head, savepoint)
                    results.append(result)
                    if result["ok"]:
                        version, head = version + 1, result["hash"]
                        changed |= keys
        except DatabaseError as exc:
            log.error("commit of %d change sets failed: %s", len(batch), exc)
            connection.close()
            results = [_failure("error", f"cluster database write failed: {exc}") for _ in batch]
            changed, version, head = set(), self.version, self.hash
        self.version, self.hash = version, head
        for origin, payload in batch:
            faults.crash_point("after_apply", origin, payload)
        self._answer([cs_id for cs_id, _ in parsed], results)
        if changed and self.on_applied is not None:
            self.on_applied(version, changed)
        return results

    def _answer(self, ids: list[str | None], results: list[Result]) -> None:
        for cs_id, result in zip(ids, results, strict=True):
            if cs_id is None:
                continue
            with self.waiters_lock:
                future = self.waiters.pop(cs_id, None)
            if future is not None and not future.done():
                future.set_result(result)

    def _apply_one(
        self,
        cursor: Any,
        origin: str,
        payload: bytes,
        cs_id: str | None,
        cs: Any,
        version: int,
        head: str,
        savepoint: bool,
    ) -> tuple[Result, ChangedKeys]:
        try:
            if cs_id is None or not isinstance(cs, dict):
                raise InvalidChangeSetError("malformed change set")
            ops = cs.get("ops")
            if not isinstance(ops, list) or not ops:
                raise InvalidChangeSetError("change set has no ops")
            keys: ChangedKeys = set()
            with transaction.atomic(using=CLUSTER, savepoint=savepoint):
                saved: list[tuple[ModelSQL, Any, dict[str, Any]]] = []
                deleted: list[tuple[ModelSQL, Any, Any]] = []
                for op in ops:
                    self._apply_op(cursor, op, version, saved, deleted, keys)
                self._check_references(cursor, saved, deleted)
                if version % PRUNE_EVERY == 0:
                    self._prune(cursor, version)
                new_hash = chain_hash(head, payload)
                cursor.execute(
                    "INSERT INTO replicator_changelogentry (version, changeset_id, origin, hash, payload) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [version, cs_id, origin, new_hash, payload],
                )
            return {"ok": True, "version": version, "hash": new_hash}, keys
        except ReplicationError as exc:
            return _failure(exc.code, str(exc)), set()
        except IntegrityError as exc:
            return _failure("conflict", f"constraint violated: {exc}"), set()
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            return _failure("invalid", f"malformed change set: {exc!r}"), set()

    def _prune(self, cursor: Any, version: int) -> None:
        """Bound the change log and the ring models, at fixed versions so every node prunes alike."""
        cursor.execute("DELETE FROM replicator_changelogentry WHERE version <= %s", [version - self.retain])
        connection = connections[CLUSTER]
        quote = connection.ops.quote_name
        for model in REPLICATED_MODELS.values():
            if model.ring_size_setting is None:
                continue
            table, pk = quote(model._meta.db_table), quote(model._meta.pk.column)
            order = ", ".join(
                f"{quote(cast(models.Field[Any, Any], model._meta.get_field(f)).column)} DESC" for f in model.ring_order
            )
            cursor.execute(
                f"DELETE FROM {table} WHERE {pk} IN (SELECT {pk} FROM {table} ORDER BY {order} LIMIT %s OFFSET %s)",
                [2**62, int(getattr(settings, model.ring_size_setting))],
            )

    def _model_sql(self, label: object) -> ModelSQL:
        model = REPLICATED_MODELS.get(str(label))
        if model is None:
            raise InvalidChangeSetError(f"unknown replicated model {label!r}")
        sql = self._sql.get(model)
        if sql is None:
            sql = self._sql[model] = ModelSQL(model, connections[CLUSTER])
        return sql

    def _apply_op(
        self,
        cursor: Any,
        op: dict[str, Any],
        version: int,
        saved: list[tuple[ModelSQL, Any, dict[str, Any]]],
        deleted: list[tuple[ModelSQL, Any, Any]],
        keys: ChangedKeys,
    ) -> None:
        sql = self._model_sql(op.get("m"))
        pk, db_pk = sql.pk_value(op["k"])
        base = op["v"]
        if not isinstance(base, int) or isinstance(base, bool) or base < 0:
            raise InvalidChangeSetError(f"bad base version {base!r}")
        keys.add((sql.model._meta.label_lower, pk))
        kind = op["o"]
        if kind == "delete":
            cursor.execute(sql.delete_sql, [db_pk, base])
            if cursor.rowcount != 1:
                self._conflict(cursor, sql, pk, db_pk, base)
            deleted.append((sql, pk, db_pk))
            return
        if kind != "save":
            raise InvalidChangeSetError(f"unknown op {kind!r}")
        values = sql.values(op["f"], create=base == 0)
        attnames = tuple(values)
        if base == 0:
            cursor.execute(sql.insert_sql(attnames), [db_pk, version, *sql.db_values(values)])
            if cursor.rowcount != 1:
                raise ConflictError(f"{sql.model.describe(pk)} already exists")
        else:
            cursor.execute(sql.update_sql(attnames), [*sql.db_values(values), version, db_pk, base])
            if cursor.rowcount != 1:
                self._conflict(cursor, sql, pk, db_pk, base)
        saved.append((sql, pk, values))

    @staticmethod
    def _conflict(cursor: Any, sql: ModelSQL, pk: Any, db_pk: Any, base: int) -> None:
        cursor.execute(sql.version_sql, [db_pk])
        row = cursor.fetchone()
        if row is None:
            raise ConflictError(f"{sql.model.describe(pk)} does not exist (deleted by another writer?)")
        raise ConflictError(
            f"{sql.model.describe(pk)} was changed by another writer (now version {row[0]}, "
            f"you read version {base}); reload and retry"
        )

    @staticmethod
    def _check_references(
        cursor: Any, saved: list[tuple[ModelSQL, Any, dict[str, Any]]], deleted: list[tuple[ModelSQL, Any, Any]]
    ) -> None:
        """Foreign keys after the whole change set: targets of saved rows exist, deleted rows are unreferenced.

        Indexed lookups per touched row, so the cost does not grow with the table sizes.
        """
        for sql, pk, values in saved:
            for field, exists_sql in sql.foreign_keys:
                value = values.get(field.attname)
                if value is None:
                    continue
                cursor.execute(exists_sql, [field.target_field.get_db_prep_value(value, sql.connection)])
                if cursor.fetchone() is None:
                    raise ConflictError(f"{sql.model.describe(pk)}: {field.verbose_name} '{value}' does not exist")
        for sql, pk, db_pk in deleted:
            for referrer, referenced_sql in sql.referrers:
                cursor.execute(referenced_sql, [db_pk])
                if cursor.fetchone() is not None:
                    raise ConflictError(
                        f"{sql.model.describe(pk)} is still referenced by {referrer._meta.verbose_name_plural}"
                    )


def _parse(payload: bytes) -> tuple[str | None, Any]:
    """(change set id, decoded change set); (None, None) when it is not JSON with an id."""
    try:
        cs = json.loads(payload)
        return str(cs["id"]), cs
    except (ValueError, KeyError, TypeError):
        return None, None


def _failure(code: str, error: str) -> Result:
    return {"ok": False, "code": code, "error": error}
