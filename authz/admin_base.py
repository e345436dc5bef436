"""The ACL-aware admin base every app's admin builds on.

Permissions come from the ACL resolver (the API's rules); every write lands in the replicated
cluster log in the same change set as the change; the change form carries the version the
operator loaded (optimistic concurrency); replication and service errors become messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import router, transaction
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from authz.exceptions import AccessDenied, AccessError
from authz.permissions import has_privileges, principal_of
from authz.restrict import restrict
from portal import audit
from replicator.exceptions import ReplicationError

VERSION_FIELD = "_loaded_version"  # the hidden field of portal's admin/change_form.html

_ModelT = TypeVar("_ModelT", bound=Model)


def actor_name(request: HttpRequest) -> str:
    """The name the cluster log gives the request's user: its token id when it came with a token.

    Admins that call services pass ``request.user`` instead; the services name it the same way.
    """
    return str(principal_of(request.user) or "")


class ACLAdminMixin(Generic[_ModelT]):
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
        queryset: QuerySet[_ModelT] = super().get_queryset(request)  # type: ignore[misc]  # a mixin
        return restrict(queryset, request.user, self.acl_object, privs, any_of=True).exists()

    def get_queryset(self, request: HttpRequest) -> QuerySet[_ModelT]:
        queryset: QuerySet[_ModelT] = super().get_queryset(request)  # type: ignore[misc]  # a mixin: ModelAdmin has it
        if getattr(request.user, "is_superuser", False):
            return queryset
        privs = self.acl_view + self.acl_change  # viewing or changing, as has_view_permission
        if self.acl_object:  # narrowed in the query, before any row is fetched
            return restrict(queryset, request.user, self.acl_object, privs, any_of=True) if privs else queryset.none()
        return queryset if self._acl(request, privs) else queryset.none()

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


class AuditedModelAdmin(ACLAdminMixin[_ModelT], admin.ModelAdmin[_ModelT]):
    """Admin for replicated models.

    Every add, change and delete lands in the replicated cluster log in the same change set as
    the change itself: by default ``save_model`` and ``delete_model`` write the row and its entry
    together; an app whose admin overrides them calls its own services instead, which audit
    their writes themselves (``actor=request.user``). Django's separate ``log_*`` calls record
    nothing, so nothing is logged twice. The change form carries the version the operator
    loaded, so saving over someone else's newer change is a conflict rather than a silent
    overwrite; replication errors (conflict, no quorum) and the app's ``service_errors`` become
    messages.
    """

    service_errors: tuple[type[Exception], ...] = ()

    def loaded_version(self, request: HttpRequest) -> int | None:
        """The version of the object when the operator loaded the change form."""
        loaded = request.POST.get(VERSION_FIELD, "")
        return int(loaded) if loaded.isdigit() else None

    def audit(self, request: HttpRequest, message: str) -> None:
        audit.record(actor_name(request), message)

    def save_model(self, request: HttpRequest, obj: _ModelT, form: Any, change: bool) -> None:
        loaded = self.loaded_version(request) if change else None
        if loaded is not None:
            obj.version = loaded  # type: ignore[attr-defined]  # the version the operator saw
        verb = "changed" if change else "added"
        with transaction.atomic(using=router.db_for_write(type(obj))):  # the row and its entry: one change set
            obj.save()
            self.audit(request, f"admin: {verb} {obj._meta.verbose_name} '{obj}'")

    def delete_model(self, request: HttpRequest, obj: _ModelT) -> None:
        description = f"admin: deleted {obj._meta.verbose_name} '{obj}'"
        with transaction.atomic(using=router.db_for_write(type(obj))):
            obj.delete()
            self.audit(request, description)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[_ModelT]) -> None:
        """The bulk action: each object through ``delete_model``, all of them one change set."""
        with transaction.atomic(using=router.db_for_write(queryset.model)):
            for obj in queryset:
                self.delete_model(request, obj)

    def _guarded(self, request: HttpRequest, view: Callable[..., HttpResponse], *args: Any) -> HttpResponse:
        refusals: tuple[type[Exception], ...] = (ReplicationError, *self.service_errors)
        try:
            return view(request, *args)
        except refusals as exc:
            # Django queues "... was changed successfully" before the view's atomic block submits
            # the change set; a refusal at that point takes the success message back.
            for message in [m for m in messages.get_messages(request) if m.level != messages.SUCCESS]:
                messages.add_message(request, message.level, message.message, extra_tags=message.extra_tags)
            messages.error(request, str(exc))
            return HttpResponseRedirect(request.get_full_path())

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        return self._guarded(request, super().changeform_view, object_id, form_url, extra_context)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        return self._guarded(request, super().delete_view, object_id, extra_context)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        return self._guarded(request, super().changelist_view, extra_context)

    # Django's own log entries: the audit entry is written with the change instead (see above).
    # No LogEntry is made, so none is returned (Django's callers ignore the value): hence the ignores.
    def log_addition(self, request: HttpRequest, obj: _ModelT, message: Any) -> None:  # type: ignore[override]
        return None

    def log_change(self, request: HttpRequest, obj: _ModelT, message: Any) -> None:  # type: ignore[override]
        return None

    def log_deletion(self, request: HttpRequest, obj: _ModelT, object_repr: str) -> None:  # type: ignore[override]
        return None

    def log_deletions(self, request: HttpRequest, queryset: QuerySet[_ModelT]) -> None:  # type: ignore[override]
        return None

    def history_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        raise PermissionDenied("object history is in the cluster log")


class ReadOnlyAdmin(ACLAdminMixin[_ModelT], admin.ModelAdmin[_ModelT]):
    """Viewable, never written from the admin (the cluster log, key material)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ServiceAdmin(AuditedModelAdmin[_ModelT]):
    """``save_model``, ``delete_model`` and ``delete_queryset`` call ``authz`` services.

    The services check the caller's permissions as the API does and write the change with its
    cluster-log entry in one change set, so the admin's own log entries are not written. A
    refusal is a 403; bad input that the form could not catch is shown as a message.
    """

    def loaded_version(self, request: HttpRequest, change: bool = True) -> int | None:
        """The version the operator loaded: saving over a newer change is a conflict."""
        loaded = request.POST.get(VERSION_FIELD, "") if change else ""
        return int(loaded) if loaded.isdigit() else None

    def save_model(self, request: HttpRequest, obj: _ModelT, form: Any, change: bool) -> None:
        raise NotImplementedError  # each page calls its service

    def delete_model(self, request: HttpRequest, obj: _ModelT) -> None:
        raise NotImplementedError

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[str]]:
        """The objects themselves: what goes with them is the service's to decide (and to check)."""
        deleted = [str(obj) for obj in objs]
        return deleted, {str(self.model._meta.verbose_name_plural): len(deleted)}, set(), []

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[_ModelT]) -> None:
        """All of them or none, in one change set."""
        with transaction.atomic(using="cluster"):
            for obj in queryset:
                self.delete_model(request, obj)

    def _refusals(self, view: Callable[..., HttpResponse], request: HttpRequest, *args: Any) -> HttpResponse:
        try:
            return view(request, *args)
        except AccessDenied as exc:
            raise PermissionDenied(str(exc)) from None
        except AccessError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(request.get_full_path())

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        return self._refusals(super().changeform_view, request, object_id, form_url, extra_context)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        return self._refusals(super().delete_view, request, object_id, extra_context)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        return self._refusals(super().changelist_view, request, extra_context)

    # As above: no LogEntry, so none returned.
    def log_addition(self, request: HttpRequest, obj: _ModelT, message: Any) -> None:  # type: ignore[override]
        """The service recorded it, in its change set."""

    def log_change(self, request: HttpRequest, obj: _ModelT, message: Any) -> None:  # type: ignore[override]
        """The service recorded it, in its change set."""

    def log_deletion(self, request: HttpRequest, obj: _ModelT, object_repr: str) -> None:  # type: ignore[override]
        """The service recorded it, in its change set."""

    def log_deletions(self, request: HttpRequest, queryset: QuerySet[_ModelT]) -> None:  # type: ignore[override]
        """The service recorded them, in their change set."""
