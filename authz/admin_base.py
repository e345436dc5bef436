"""The base of the access-control admin pages: every write is a call of the same service as the API's."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from authz.exceptions import AccessDenied, AccessError
from portal.admin import VERSION_FIELD, AuditedModelAdmin


class ServiceAdmin(AuditedModelAdmin):
    """``save_model``, ``delete_model`` and ``delete_queryset`` call ``authz`` services.

    The services check the caller's permissions as the API does and write the change with its
    cluster-log entry in one change set, so the admin's own log entries are not written. A
    refusal is a 403; bad input that the form could not catch is shown as a message.
    """

    def loaded_version(self, request: HttpRequest, change: bool) -> int | None:
        """The version the operator loaded: saving over a newer change is a conflict."""
        loaded = request.POST.get(VERSION_FIELD, "") if change else ""
        return int(loaded) if loaded.isdigit() else None

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        raise NotImplementedError  # each page calls its service

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        raise NotImplementedError

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[list[str], dict, set, list]:
        """The objects themselves: what goes with them is the service's to decide (and to check)."""
        deleted = [str(obj) for obj in objs]
        return deleted, {self.model._meta.verbose_name_plural: len(deleted)}, set(), []

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        """All of them or none, in one change set."""
        with transaction.atomic(using="cluster"):
            for obj in queryset:
                self.delete_model(request, obj)

    def _refusals(self, view: Any, request: HttpRequest, *args: Any) -> HttpResponse:
        try:
            return view(request, *args)  # type: ignore[no-any-return]
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

    def log_addition(self, request: HttpRequest, obj: Model, message: Any) -> None:
        """The service recorded it, in its change set."""

    def log_change(self, request: HttpRequest, obj: Model, message: Any) -> None:
        """The service recorded it, in its change set."""

    def log_deletion(self, request: HttpRequest, obj: Model, object_repr: str) -> None:
        """The service recorded it, in its change set."""

    def log_deletions(self, request: HttpRequest, queryset: QuerySet) -> None:
        """The service recorded them, in their change set."""
