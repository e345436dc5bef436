"""Shared admin base: audited in the cluster log, optimistic concurrency, replication errors shown."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from authz.permissions import has_privileges
from portal import audit
from replicator.exceptions import ReplicationError

VERSION_FIELD = "_loaded_version"


def _actor(request: HttpRequest) -> str:
    return str(getattr(request.user, "pk", "") or "")


class ACLAdminMixin:
    """Admin permissions from the ACL resolver, the same rules as the API.

    ``acl_root`` is the collection's ACL path; with ``acl_object`` set, each object has its own
    path (``/vms/100``) and the changelist holds only the objects the user may view. A list of
    privileges means any one of them suffices. Only ``root@pam`` passes where no rule is given.
    """

    acl_root: str | None = None
    acl_object: str | None = None  # e.g. "/vms/{vmid}"
    acl_view: tuple[str, ...] = ()
    acl_change: tuple[str, ...] = ()
    acl_add: tuple[str, ...] | None = None
    acl_delete: tuple[str, ...] | None = None

    def _acl(self, request: HttpRequest, privs: tuple[str, ...], obj: Any = None) -> bool:
        user = request.user
        if not getattr(user, "is_active", False):
            return False
        if getattr(user, "is_superuser", False):
            return True
        if not privs or self.acl_root is None:
            return False
        path = self.acl_object.format(**vars(obj)) if obj is not None and self.acl_object else self.acl_root
        return has_privileges(user, path, list(privs), any_of=True)

    def _visible(self, request: HttpRequest, privs: tuple[str, ...]) -> bool:
        """Collection level: on the collection path, or on one of its objects."""
        if self._acl(request, privs):
            return True
        if not self.acl_object or not privs or getattr(request.user, "is_superuser", False):
            return False
        return any(self._acl(request, privs, obj) for obj in super().get_queryset(request))  # type: ignore[misc]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)  # type: ignore[misc]
        if getattr(request.user, "is_superuser", False):
            return queryset
        if self.acl_object:
            allowed = [obj.pk for obj in queryset if self._acl(request, self.acl_view, obj)]
            return queryset.filter(pk__in=allowed)
        return queryset if self._acl(request, self.acl_view) else queryset.none()

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(getattr(request.user, "is_active", False))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        privs = self.acl_view + self.acl_change
        return self._acl(request, privs, obj) if obj is not None else self._visible(request, privs)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None:
            return self._acl(request, self.acl_change, obj)
        return self._visible(request, self.acl_change)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self._acl(request, self.acl_add if self.acl_add is not None else self.acl_change)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        privs = self.acl_delete if self.acl_delete is not None else self.acl_change
        return self._acl(request, privs, obj) if obj is not None else self._visible(request, privs)


class AuditedModelAdmin(ACLAdminMixin, admin.ModelAdmin):
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


class ReadOnlyAdmin(ACLAdminMixin, admin.ModelAdmin):
    """Viewable, never written from the admin (the cluster log, key material)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
