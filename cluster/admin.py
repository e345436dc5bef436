"""Admin for cluster settings, nodes and the (read-only) cluster log."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from cluster.models import ClusterLogEntry, ClusterSettings, Node
from portal.admin import AuditedModelAdmin, ReadOnlyAdmin


@admin.register(ClusterSettings)
class ClusterSettingsAdmin(AuditedModelAdmin):
    acl_root, acl_view, acl_change = "/", ("Sys.Audit",), ("Sys.Modify",)
    list_display = ("id",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Node)
class NodeAdmin(AuditedModelAdmin):
    acl_root, acl_object = "/nodes", "/nodes/{name}"
    acl_view, acl_change = ("Sys.Audit",), ("Sys.Modify",)
    list_display = ("name", "nodeid", "address", "votes", "ssl_fingerprint")
    readonly_fields = ("ssl_fingerprint",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # nodes join with pvecm


@admin.register(ClusterLogEntry)
class ClusterLogAdmin(ReadOnlyAdmin):
    acl_root, acl_view = "/", ("Sys.Syslog",)
    list_display = ("time", "node", "user", "tag", "msg")
    list_filter = ("node",)
    search_fields = ("msg", "user")
