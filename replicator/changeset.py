"""Change sets: a writer's changes to replicated rows, encoded for the replicator.

A change set is ``{"id", "origin", "time", "ops": [...]}``; each op is
``{"m": "app.model", "k": pk, "o": "save" | "delete", "v": base_version, "f": {attname: value}}``.
``v`` is the row version the writer read (0 means "create; must not exist"). Everything apply
needs travels inside (timestamps, generated ids, hashes), so apply is deterministic.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any, Protocol, cast

from django.conf import settings
from django.db import models
from django.db.models.deletion import Collector
from django.utils.encoding import is_protected_type

from replicator.exceptions import ChangeSetTooLargeError
from replicator.routers import is_cluster_model

Op = dict[str, Any]


class Versioned(Protocol):
    """A replicated row as the writer sees it: ``models.Model`` plus the ``version`` it was read at.

    ``ReplicatedModel`` cannot be named here (it imports this module); its instances are what
    every op is built from.
    """

    version: int


def model_label(model: type[models.Model]) -> str:
    """``app_label.modelname`` as used in ops."""
    return model._meta.label_lower


def _encode_value(field: models.Field[Any, Any], instance: models.Model) -> Any:
    value = field.value_from_object(instance)
    if value is None or is_protected_type(value) or isinstance(value, (dict, list, bool)):
        return value
    return field.value_to_string(instance)


def _payload_fields(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    return [f for f in model._meta.concrete_fields if f.name != "version"]


def save_op(
    instance: models.Model,
    *,
    update_fields: Iterable[str] | None = None,
    create: bool | None = None,
) -> Op:
    """The op that stores ``instance``; runs the fields' ``pre_save`` hooks (auto_now) on the writer."""
    adding = instance._state.adding if create is None else create
    fields = _payload_fields(type(instance))
    if update_fields is not None and not adding:
        wanted = set(update_fields)
        fields = [f for f in fields if f.name in wanted or f.attname in wanted]
    encoded: dict[str, Any] = {}
    for field in fields:
        if not field.primary_key:
            value = field.pre_save(instance, adding)
            setattr(instance, field.attname, value)
        encoded[field.attname] = _encode_value(field, instance)
    return {
        "m": model_label(type(instance)),
        "k": _encode_value(instance._meta.pk, instance),
        "o": "save",
        "v": 0 if adding else int(cast(Versioned, instance).version),
        "f": encoded,
    }


class _ClusterCollector(Collector):
    """Django's cascade collector, blind to models outside the cluster database.

    Node-local models that point at replicated ones (the admin's log, say) have no rows in the
    cluster database; a cascade must not look for them there.
    """

    def can_fast_delete(self, objs: Any, from_field: Any = None) -> bool:
        model = getattr(objs, "model", None) or (type(objs) if isinstance(objs, models.Model) else objs)
        if isinstance(model, type) and not is_cluster_model(model):
            return False
        return super().can_fast_delete(objs, from_field)

    def related_objects(self, related_model: Any, related_fields: Any, objs: Any) -> Any:
        if not is_cluster_model(related_model):
            return related_model._base_manager.none()
        return super().related_objects(related_model, related_fields, objs)


def delete_ops(instances: Iterable[models.Model], using: str = "cluster") -> tuple[list[Op], list[models.Model]]:
    """Ops deleting ``instances`` and everything Django's cascade rules reach from them.

    The cascade is computed on the writer, so every node deletes exactly the same rows; apply
    re-checks foreign keys and refuses the change set if a row appeared meanwhile.
    """
    collector = _ClusterCollector(using=using)
    collector.collect(list(instances))
    ops: list[Op] = []
    touched: list[models.Model] = []
    for (field, value), groups in collector.field_updates.items():
        for group in groups:
            for obj in group:  # type: ignore[attr-defined]  # django-stubs: a group is a list or queryset of rows, not one
                setattr(obj, field.attname, value)
                ops.append(save_op(obj, update_fields=[field.name]))
                touched.append(obj)
    for queryset in collector.fast_deletes:
        for obj in queryset:
            ops.append(_delete_op(obj))
            touched.append(obj)
    collector.sort()
    for _model, objs in collector.data.items():
        for obj in objs:
            ops.append(_delete_op(obj))
            touched.append(obj)
    return ops, touched


def _delete_op(instance: models.Model) -> Op:
    return {
        "m": model_label(type(instance)),
        "k": _encode_value(instance._meta.pk, instance),
        "o": "delete",
        "v": int(getattr(instance, "version", 0)),
    }


def new_changeset(ops: list[Op]) -> dict[str, Any]:
    """Wrap ops with an id, the origin node and the writer's clock (recorded, never used to order)."""
    return {
        "id": uuid.uuid4().hex,
        "origin": settings.PVE_NODE_NAME,
        "time": time.time(),
        "ops": ops,
    }


def encode(changeset: dict[str, Any]) -> bytes:
    """Canonical bytes, checked against the size cap before anything is sent."""
    data = json.dumps(changeset, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    limit = settings.PVE_MAX_CHANGESET_BYTES
    if len(data) > limit:
        raise ChangeSetTooLargeError(
            f"change set of {len(data)} bytes exceeds the limit of {limit} bytes (PVE_MAX_CHANGESET_BYTES)"
        )
    return data
