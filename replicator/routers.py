"""Route replicated models to the ``cluster`` alias and everything else to ``default``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    from django.db import models

CLUSTER = "cluster"


def is_cluster_model(model: object) -> TypeGuard[type[models.Model]]:
    """A model lives in the cluster database when it says so (ReplicatedModel and the store's own)."""
    return bool(getattr(model, "cluster_database", False))


class ClusterRouter:
    """No relation crosses the aliases: Django's own apps stay node-local in ``default``."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return CLUSTER if is_cluster_model(model) else "default"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return CLUSTER if is_cluster_model(model) else "default"

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return is_cluster_model(type(obj1)) == is_cluster_model(type(obj2))

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        if app_label == "admin":
            # The admin log is replaced by the replicated cluster log (an audit trail on every node).
            return False
        # Historical models in migrations lack class attributes: ask the live registry.
        model = None
        if model_name is not None:
            from django.apps import apps

            try:
                model = apps.get_model(app_label, model_name)
            except LookupError:
                model = hints.get("model")
        if model is None:
            return db == "default"
        return (db == CLUSTER) == is_cluster_model(model)
