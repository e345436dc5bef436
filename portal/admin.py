"""Shared admin base: audited in the cluster log, optimistic concurrency, replication errors shown."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from portal import audit
from replicator.exceptions import ReplicationError

VERSION_FIELD = "_loaded_version"


def _actor(request: HttpRequest) -> str:
    return str(getattr(request.user, "pk", "") or "")


class AuditedModelAdmin(admin.ModelAdmin):
    """Admin for replicated models.

    Every add, change and delete lands in the replicated cluster log; the change form carries
    the version the operator loaded, so saving over someone else's newer change is a conflict
    rather than a silent overwrite; replication errors (conflict, no quorum) become messages.
    """

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        loaded = request.POST.get(VERSION_FIELD, "") if change else ""
        if loaded.isdigit():
            obj.version = int(loaded)  # type: ignore[attr-defined]  # the version the operator saw
        obj.save()

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ReplicationError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except ReplicationError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(request.get_full_path())

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        try:
            return super().changelist_view(request, extra_context)
        except ReplicationError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(request.get_full_path())

    def log_addition(self, request: HttpRequest, obj: Model, message: Any) -> None:
        audit.record(_actor(request), f"admin: added {obj._meta.verbose_name} '{obj}'")

    def log_change(self, request: HttpRequest, obj: Model, message: Any) -> None:
        audit.record(_actor(request), f"admin: changed {obj._meta.verbose_name} '{obj}'")

    def log_deletion(self, request: HttpRequest, obj: Model, object_repr: str) -> None:
        audit.record(_actor(request), f"admin: deleted {obj._meta.verbose_name} '{object_repr}'")

    def log_deletions(self, request: HttpRequest, queryset: QuerySet) -> None:
        for obj in queryset:
            self.log_deletion(request, obj, str(obj))

    def history_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        raise PermissionDenied("object history is in the cluster log")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable, never written from the admin (the cluster log, key material)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
