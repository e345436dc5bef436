"""Admin for realms, users, pools and (public) key material."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from authz.models import KeyMaterial, Pool, Realm, User
from portal.admin import AuditedModelAdmin, ReadOnlyAdmin
from replicator.mirror import is_private


@admin.register(Realm)
class RealmAdmin(AuditedModelAdmin):
    acl_root, acl_object = "/access/realm", "/access/realm/{realm}"
    acl_view, acl_change = ("Sys.Audit", "Realm.AllocateUser"), ("Realm.Allocate",)
    list_display = ("realm", "type", "comment", "default")


class UserForm(forms.ModelForm):
    new_password = forms.CharField(
        label="Set password",
        required=False,
        widget=forms.PasswordInput,
        max_length=4096,
        help_text="pve realm and root@pam only; leave empty to keep the current password.",
    )

    class Meta:
        model = User
        fields = ("userid", "realm", "enable", "expire", "firstname", "lastname", "email", "comment", "keys")


@admin.register(User)
class UserAdmin(AuditedModelAdmin):
    acl_root = "/access"
    acl_view, acl_change = ("Sys.Audit", "User.Modify"), ("User.Modify",)
    form = UserForm
    list_display = ("userid", "realm", "enable", "expire", "firstname", "lastname", "email")
    list_filter = ("realm", "enable")
    search_fields = ("userid", "firstname", "lastname", "email")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("userid", "realm") if obj is not None else ()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_superuser:
            return bool(getattr(request.user, "is_superuser", False))  # only root changes root@pam
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_superuser:
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if form.cleaned_data.get("new_password"):
            obj.set_password(form.cleaned_data["new_password"])
        super().save_model(request, obj, form, change)


@admin.register(Pool)
class PoolAdmin(AuditedModelAdmin):
    acl_root, acl_object = "/pool", "/pool/{poolid}"
    acl_view, acl_change = ("Pool.Audit",), ("Pool.Allocate",)
    list_display = ("poolid", "comment")


@admin.register(KeyMaterial)
class KeyMaterialAdmin(ReadOnlyAdmin):
    """Certificates and public keys can be read; private keys are never shown."""

    list_display = ("path", "private")
    fields = ("path", "public_content")
    readonly_fields = ("path", "public_content")

    @admin.display(boolean=True)
    def private(self, obj: KeyMaterial) -> bool:
        return is_private(obj.path) or obj.path == "pve-www.key"

    def public_content(self, obj: KeyMaterial) -> str:
        return "(private)" if self.private(obj) else obj.content


from authz import admin_access  # noqa: E402,F401  (groups, roles, ACL entries, tokens)
