"""The replicated model base class and the store's own bookkeeping tables.

Replicated models never write the database from a Django process: ``save()`` and
``delete()`` become change sets submitted to the local replicator, which applies them (on
every member) and answers with the new version. Bulk paths raise instead of silently writing
one node.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models.query import RawQuerySet

from replicator import changeset, client
from replicator.exceptions import BulkWriteError
from replicator.state import applying

REPLICATED_MODELS: dict[str, type[ReplicatedModel]] = {}

_M = TypeVar("_M", bound=models.Model)


def _refuse(what: str) -> BulkWriteError:
    return BulkWriteError(
        f"{what} bypasses replication and is refused on replicated models; "
        "save() or delete() each object (inside transaction.atomic(using='cluster') for one change set)"
    )


class ReplicatedQuerySet(models.QuerySet[_M]):
    """Bulk writes raise outside the replicator; ``delete()`` becomes one replicated change set."""

    def update(self, **kwargs: Any) -> int:
        if not applying():
            raise _refuse("QuerySet.update()")
        return super().update(**kwargs)

    def bulk_create(self, *args: Any, **kwargs: Any) -> list[_M]:
        if not applying():
            raise _refuse("QuerySet.bulk_create()")
        return super().bulk_create(*args, **kwargs)

    def bulk_update(self, *args: Any, **kwargs: Any) -> int:
        if not applying():
            raise _refuse("QuerySet.bulk_update()")
        return super().bulk_update(*args, **kwargs)

    # A raw query is checked as text: psycopg's composed queries (``sql.SQL``) are not accepted here.
    def raw(self, raw_query: str, *args: Any, **kwargs: Any) -> RawQuerySet[_M]:  # type: ignore[override]
        if not raw_query.lstrip().lower().startswith("select") and not applying():
            raise _refuse("raw SQL")
        return super().raw(raw_query, *args, **kwargs)

    def delete(self) -> tuple[int, dict[str, int]]:
        if applying():
            return super().delete()
        objs = list(self)
        if not objs:
            return 0, {}
        ops, touched = changeset.delete_ops(objs, using=self.db)
        client.submit_ops(ops, touched)
        counts: dict[str, int] = {}
        for op in ops:
            if op["o"] == "delete":
                counts[op["m"]] = counts.get(op["m"], 0) + 1
        return sum(counts.values()), counts


_ReplicatedManagerBase = models.Manager.from_queryset(ReplicatedQuerySet)


class ReplicatedManager(_ReplicatedManagerBase[_M]):
    """Default manager of replicated models."""


class ReplicatedModel(models.Model):
    """Base class of every model whose rows live in the replicated ``cluster`` database.

    Subclasses need a primary key chosen by the writer (a natural key or a UUID default), never
    an auto-increment: ids must be identical on every node. ``version`` is the cluster version
    that last changed the row and is the base of optimistic concurrency.
    """

    cluster_database: ClassVar[bool] = True
    # A ring: at most ``settings.<ring_size_setting>`` rows, the oldest by ``ring_order`` dropped.
    ring_size_setting: ClassVar[str | None] = None
    ring_order: ClassVar[tuple[str, ...]] = ()
    # Rows a node loses when its diverged history is replaced are written again afterwards
    # (append-only records such as the cluster log), so they are merged rather than lost.
    merge_after_divergence: ClassVar[bool] = False

    version = models.BigIntegerField(default=0, editable=False)

    objects = ReplicatedManager()

    class Meta:
        abstract = True

    @classmethod
    def describe(cls, pk: Any) -> str:
        """How conflict messages name a row: override for Proxmox's wording ('VM 100')."""
        return f"{cls._meta.verbose_name} {pk!s}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if applying():
            return super().save(*args, **kwargs)
        update_fields = kwargs.get("update_fields")
        create = True if kwargs.get("force_insert") else (False if kwargs.get("force_update") else None)
        op = changeset.save_op(self, update_fields=update_fields, create=create)
        client.submit_ops([op], [self])
        return None

    save.alters_data = True  # type: ignore[attr-defined]  # Django's marker on a method, as on Model.save

    def delete(self, using: str | None = None, keep_parents: bool = False) -> tuple[int, dict[str, int]]:
        if applying():
            return super().delete(using=using, keep_parents=keep_parents)
        if self.pk is None:
            raise ValueError(f"{self._meta.object_name} object can't be deleted because its pk is None")
        ops, touched = changeset.delete_ops([self])
        client.submit_ops(ops, touched)
        return len(ops), {}

    delete.alters_data = True  # type: ignore[attr-defined]  # likewise


def register(model: type[ReplicatedModel]) -> None:
    """Called for every concrete subclass when apps are ready; checks the rules above."""
    pk = model._meta.pk
    if isinstance(pk, models.AutoField):
        raise ImproperlyConfigured(f"{model._meta.label}: replicated models need a writer-chosen primary key")
    if model._meta.many_to_many:
        raise ImproperlyConfigured(
            f"{model._meta.label}: use an explicit replicated model instead of a ManyToManyField"
        )
    REPLICATED_MODELS[changeset.model_label(model)] = model


class ChangeLogEntry(models.Model):
    """An applied change set, retained for delta sync and for verifying the hash chain.

    The newest entry is the head of the history: the cluster version and hash.
    """

    cluster_database: ClassVar[bool] = True

    version = models.BigIntegerField(primary_key=True)
    changeset_id = models.CharField(max_length=32, unique=True)
    origin = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    payload = models.BinaryField()

    class Meta:
        default_permissions = ()
