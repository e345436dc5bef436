"""Admin for cluster settings, nodes and the (read-only) cluster log.

Saving goes through the cluster services, as the API and ``pvecm`` do: validated, audited with
the operator in the same change set, corosync.conf's config_version bumped with a node change.
A node's corosync settings (address, votes, links) and its removal are root@pam's alone.
"""

from __future__ import annotations

import copy
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from authz.admin_base import VERSION_FIELD, AuditedModelAdmin, ReadOnlyAdmin
from authz.permissions import principal_of
from cluster import services
from cluster.exceptions import InvalidOptions
from cluster.membership import nodelist
from cluster.models import ClusterLogEntry, ClusterSettings, Node


def _actor(request: HttpRequest) -> str:
    return str(principal_of(request.user) or "")


def _loaded_version(request: HttpRequest, obj: Any, change: bool) -> None:
    """The version the operator saw: saving over a newer change is a conflict, not an overwrite."""
    loaded = request.POST.get(VERSION_FIELD, "") if change else ""
    if loaded.isdigit():
        obj.version = int(loaded)


class ClusterSettingsForm(forms.ModelForm[ClusterSettings]):
    class Meta:
        model = ClusterSettings
        fields = ("options",)

    def clean_options(self) -> Any:
        options = self.cleaned_data.get("options")
        if not isinstance(options, dict):
            raise ValidationError("options must map option names to values")
        for key, value in options.items():
            try:
                ClusterSettings.check_option(key, value)
            except InvalidOptions as exc:
                raise ValidationError(str(exc)) from None
        return options


@admin.register(ClusterSettings)
class ClusterSettingsAdmin(AuditedModelAdmin[ClusterSettings]):
    acl_root, acl_view, acl_change = "/", ("Sys.Audit",), ("Sys.Modify",)
    list_display = ("id",)
    form = ClusterSettingsForm

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ClusterSettings, form: Any, change: bool) -> None:
        _loaded_version(request, obj, change)
        services.update_datacenter_options(obj, actor=_actor(request))


class NodeForm(forms.ModelForm[Node]):
    """Address, votes and links of a node, checked as ``services.change_node`` will check them."""

    class Meta:
        model = Node
        fields = ("address", "votes", "links")

    def clean(self) -> dict[str, Any]:
        super().clean()  # a ModelForm's clean() returns its cleaned_data
        cleaned = self.cleaned_data
        if self.errors:
            return cleaned
        candidate = copy.copy(self.instance)
        for field in ("address", "votes", "links"):
            if field in cleaned:
                setattr(candidate, field, cleaned[field])
        try:
            nodelist.check_node_change(candidate)
        except nodelist.MembershipError as exc:
            raise ValidationError(str(exc)) from None
        return cleaned


@admin.register(Node)
class NodeAdmin(AuditedModelAdmin[Node]):
    acl_root, acl_object = "/nodes", "/nodes/{name}"
    acl_view = ("Sys.Audit",)
    acl_change = ()  # corosync settings: root@pam only (no ACL grants them)
    form = NodeForm
    list_display = ("name", "nodeid", "address", "votes", "joining", "ssl_fingerprint")
    fields = ("name", "nodeid", "address", "votes", "links", "joining", "ssl_fingerprint")
    readonly_fields = ("name", "nodeid", "joining", "ssl_fingerprint")
    actions = None  # no bulk delete: nodes leave one at a time, through delnode

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # nodes join with pvecm

    def save_model(self, request: HttpRequest, obj: Node, form: Any, change: bool) -> None:
        _loaded_version(request, obj, change)
        services.change_node(obj, actor=_actor(request))

    def delete_model(self, request: HttpRequest, obj: Node) -> None:
        """``pvecm delnode``: the node, its keys and certificate go in one change (refused for this node)."""
        services.delete_node(obj.name, user=_actor(request))

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[list[str], dict[str, int], set, list]:
        """delnode decides what goes with a node (its keys) and what stops it (its VMs), not the admin's cascade."""
        names = [str(obj) for obj in objs]
        return names, {str(Node._meta.verbose_name_plural): len(names)}, set(), []

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for node in queryset:
            self.delete_model(request, node)

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except nodelist.MembershipError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except nodelist.MembershipError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(request.get_full_path())


@admin.register(ClusterLogEntry)
class ClusterLogAdmin(ReadOnlyAdmin[ClusterLogEntry]):
    acl_root, acl_view = "/", ("Sys.Syslog",)
    list_display = ("time", "node", "user", "tag", "msg")
    list_filter = ("node",)
    search_fields = ("msg", "user")
