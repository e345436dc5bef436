"""Apply delivered change sets in delivery order: one savepoint each, one fsync'd commit per batch.

Group commit: the applier takes every change set waiting in its queue (up to a cap), applies
each inside its own savepoint (a failed one rolls back alone, with the same verdict on every
node), then commits once. Answers go out only after the commit, so an acknowledged write is
durable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, connections, models, transaction

from replicator.exceptions import ConflictError, InvalidChangeSetError, ReplicationError
from replicator.models import (
    REPLICATED_MODELS,
    ChangeLogEntry,
    ReplicatedModel,
    ReplicationState,
)
from replicator.routers import is_cluster_model

log = logging.getLogger(__name__)

CLUSTER = "cluster"
GENESIS_HASH = "0" * 64
MAX_BATCH = 512
ChangedKeys = set[tuple[str, Any]]
Result = dict[str, Any]


def chain_hash(previous: str, payload: bytes) -> str:
    """The hash chain over the applied history: sha256(previous head || change set bytes)."""
    return hashlib.sha256(previous.encode() + b"\n" + payload).hexdigest()


def _related_tables(model: type[models.Model]) -> list[str]:
    related = [rel.related_model for rel in model._meta.related_objects]
    related += [f.related_model for f in model._meta.concrete_fields if f.is_relation and f.related_model]
    tables = {model._meta.db_table} | {m._meta.db_table for m in related if is_cluster_model(m)}
    return sorted(tables)


def _changeset_id(payload: bytes) -> str | None:
    try:
        return str(json.loads(payload)["id"])
    except (ValueError, KeyError, TypeError):
        return None


class Applier:
    """Owns the cluster database: the only code that writes it."""

    def __init__(self, *, retain: int, on_applied: Callable[[int, ChangedKeys], None] | None = None) -> None:
        self.retain = retain
        self.on_applied = on_applied
        self.queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self.waiters: dict[str, Future[Result]] = {}
        self.waiters_lock = threading.Lock()
        state, _ = ReplicationState.objects.get_or_create(id=1, defaults={"version": 0, "hash": GENESIS_HASH})
        self.version = state.version
        self.hash = state.hash
        self._tables: dict[type[models.Model], list[str]] = {}

    # --- delivery side -------------------------------------------------------------------

    def deliver(self, origin: str, payload: bytes) -> None:
        """Transport callback: queue a delivered change set (never blocks, never raises)."""
        self.queue.put((origin, payload))

    def expect(self, changeset_id: str) -> Future[Result]:
        """Register interest in the result of a change set before submitting it."""
        future: Future[Result] = Future()
        with self.waiters_lock:
            self.waiters[changeset_id] = future
        return future

    def forget(self, changeset_id: str) -> None:
        with self.waiters_lock:
            self.waiters.pop(changeset_id, None)

    def stop(self) -> None:
        self.queue.put(None)

    def run(self) -> None:
        """Apply loop: block for one change set, then take what else is waiting."""
        while True:
            item = self.queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.queue.put(None)
                    break
                batch.append(more)
            try:
                self.apply_batch(batch)
            except Exception as exc:  # the applier must outlive any single bad batch
                log.exception("applying a batch failed")
                self._fail(batch, f"replicator error: {exc}")

    def _fail(self, batch: list[tuple[str, bytes]], message: str) -> None:
        for _, payload in batch:
            cs_id = _changeset_id(payload)
            with self.waiters_lock:
                future = self.waiters.pop(cs_id, None) if cs_id else None
            if future is not None and not future.done():
                future.set_result({"ok": False, "code": "error", "error": message})

    # --- apply ---------------------------------------------------------------------------

    def apply_batch(self, batch: list[tuple[str, bytes]]) -> list[Result]:
        """Apply a batch; returns one result per change set, in order."""
        version, head = self.version, self.hash
        results: list[Result] = []
        ids = [_changeset_id(payload) for _, payload in batch]
        changed: ChangedKeys = set()
        try:
            with transaction.atomic(using=CLUSTER):
                for origin, payload in batch:
                    result, keys = self._apply_one(origin, payload, version + 1, head)
                    results.append(result)
                    if result["ok"]:
                        version, head = version + 1, result["hash"]
                        changed |= keys
                if version != self.version:
                    ReplicationState.objects.filter(id=1).update(version=version, hash=head)
                    if version // 1000 != self.version // 1000:
                        ChangeLogEntry.objects.filter(version__lte=version - self.retain).delete()
        except DatabaseError as exc:
            log.error("commit of %d change sets failed: %s", len(batch), exc)
            connections[CLUSTER].close()
            failure = {"ok": False, "code": "error", "error": f"cluster database write failed: {exc}"}
            results = [dict(failure) for _ in batch]
            changed, version, head = set(), self.version, self.hash
        self.version, self.hash = version, head
        for cs_id, result in zip(ids, results, strict=True):
            if cs_id is None:
                continue
            with self.waiters_lock:
                future = self.waiters.pop(cs_id, None)
            if future is not None:
                future.set_result(result)
        if changed and self.on_applied is not None:
            self.on_applied(version, changed)
        return results

    def _apply_one(self, origin: str, payload: bytes, version: int, head: str) -> tuple[Result, ChangedKeys]:
        try:
            cs = json.loads(payload)
            cs_id = str(cs["id"])
            ops = cs["ops"]
            if not isinstance(ops, list) or not ops:
                raise InvalidChangeSetError("change set has no ops")
            keys: ChangedKeys = set()
            with transaction.atomic(using=CLUSTER):
                touched: set[type[models.Model]] = set()
                for op in ops:
                    model, pk = self._apply_op(op, version)
                    touched.add(model)
                    keys.add((model._meta.label_lower, pk))
                self._check_constraints(touched)
                new_hash = chain_hash(head, payload)
                ChangeLogEntry(version=version, changeset_id=cs_id, origin=origin, hash=new_hash, payload=payload).save(
                    force_insert=True, using=CLUSTER
                )
            return {"ok": True, "version": version, "hash": new_hash}, keys
        except ReplicationError as exc:
            return {"ok": False, "code": exc.code, "error": str(exc)}, set()
        except IntegrityError as exc:
            return {"ok": False, "code": "conflict", "error": f"constraint violated: {exc}"}, set()
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            return {"ok": False, "code": "invalid", "error": f"malformed change set: {exc!r}"}, set()

    def _apply_op(self, op: dict[str, Any], version: int) -> tuple[type[ReplicatedModel], Any]:
        model = REPLICATED_MODELS.get(str(op.get("m")))
        if model is None:
            raise InvalidChangeSetError(f"unknown replicated model {op.get('m')!r}")
        pk = model._meta.pk.to_python(op["k"])
        base = op["v"]
        if not isinstance(base, int) or base < 0:
            raise InvalidChangeSetError(f"bad base version {base!r}")
        rows = model._base_manager.using(CLUSTER).filter(pk=pk)
        if op["o"] == "delete":
            if rows.filter(version=base)._raw_delete(CLUSTER) == 0:
                self._conflict(model, pk, base)
            return model, pk
        if op["o"] != "save":
            raise InvalidChangeSetError(f"unknown op {op['o']!r}")
        values = self._values(model, op["f"])
        if base == 0:
            if rows.exists():
                raise ConflictError(f"{model.describe(pk)} already exists")
            values[model._meta.pk.attname] = pk
            instance = model(**values)
            instance.version = version
            instance.save_base(raw=True, force_insert=True, using=CLUSTER)
        elif rows.filter(version=base).update(**values, version=version) == 0:
            self._conflict(model, pk, base)
        return model, pk

    @staticmethod
    def _values(model: type[ReplicatedModel], fields: dict[str, Any]) -> dict[str, Any]:
        by_attname = {f.attname: f for f in model._meta.concrete_fields}
        values: dict[str, Any] = {}
        for attname, raw in fields.items():
            field = by_attname.get(attname)
            if field is None or attname == "version":
                raise InvalidChangeSetError(f"{model._meta.label_lower} has no field {attname!r}")
            if field.primary_key:
                continue
            values[attname] = field.to_python(raw)
        return values

    @staticmethod
    def _conflict(model: type[ReplicatedModel], pk: Any, base: int) -> None:
        current = model._base_manager.using(CLUSTER).filter(pk=pk).values_list("version", flat=True).first()
        if current is None:
            raise ConflictError(f"{model.describe(pk)} does not exist (deleted by another writer?)")
        raise ConflictError(
            f"{model.describe(pk)} was changed by another writer (now version {current}, "
            f"you read version {base}); reload and retry"
        )

    def _check_constraints(self, models_touched: set[type[models.Model]]) -> None:
        tables: set[str] = set()
        for model in models_touched:
            if model not in self._tables:
                self._tables[model] = _related_tables(model)
            tables.update(self._tables[model])
        connections[CLUSTER].check_constraints(table_names=sorted(tables))
