"""Admin for realms, users, pools and (public) key material; every change through the authz services."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from authz import delegation, ids, services
from authz.admin_base import ReadOnlyAdmin, ServiceAdmin
from authz.models import SUPERUSER, Group, KeyMaterial, Pool, Realm, User
from authz.permissions import has_privileges, is_superuser
from authz.services import realms, users
from replicator.mirror import is_private


def _clean_id(check: Any, value: Any) -> Any:
    try:
        return check(value)
    except ids.InvalidId as exc:
        raise forms.ValidationError(str(exc)) from None


class RealmForm(forms.ModelForm[Realm]):
    bind_password = forms.CharField(
        label="Bind password",
        required=False,
        widget=forms.PasswordInput,
        max_length=4096,
        help_text="LDAP and AD realms; kept under priv/, never shown. Leave empty to keep the current one.",
    )

    class Meta:
        model = Realm
        fields = ("realm", "type", "comment", "default", "options")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "type" in self.fields:  # only when adding: the type of a realm never changes
            cast(forms.ChoiceField, self.fields["type"]).choices = [
                (t, n) for t, n in Realm.TYPES if t in realms.ADDABLE_TYPES
            ]

    def clean_realm(self) -> str:
        return str(_clean_id(ids.check_realm_id, self.cleaned_data["realm"]))

    def clean_options(self) -> dict[str, Any]:
        options = self.cleaned_data.get("options") or {}
        if not isinstance(options, dict):
            raise forms.ValidationError("options are a JSON object of option names and values")
        return options


@admin.register(Realm)
class RealmAdmin(ServiceAdmin[Realm]):
    """Realm.Allocate on /access/realm, as Proxmox; the type is fixed once the realm exists."""

    acl_root = "/access/realm"
    acl_view, acl_change = ("Sys.Audit", "Realm.Allocate"), ("Realm.Allocate",)
    form = RealmForm
    list_display = ("realm", "type", "comment", "default")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("realm", "type") if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.realm in realms.BUILTIN:
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Realm, form: Any, change: bool) -> None:
        data = form.cleaned_data
        password = data.get("bind_password") or None
        if not change:
            services.add_realm(
                obj.realm,
                obj.type,
                actor=request.user,
                comment=data.get("comment", ""),
                default=bool(data.get("default")),
                options=data.get("options") or {},
                password=password,
            )
            return
        before = Realm.objects.get(realm=obj.realm).options
        options = data.get("options") or {}
        services.modify_realm(
            obj.realm,
            actor=request.user,
            comment=data.get("comment", ""),
            default=bool(data.get("default")),
            options=options,
            delete=sorted(set(before) - set(options)),
            password=password,
            version=self.loaded_version(request, change),
        )

    def delete_model(self, request: HttpRequest, obj: Realm) -> None:
        services.delete_realm(obj.realm, actor=request.user)


class UserForm(forms.ModelForm[User]):
    groups = forms.ModelMultipleChoiceField(queryset=Group.objects.all(), required=False)
    new_password = forms.CharField(
        label="Set password",
        required=False,
        widget=forms.PasswordInput,
        max_length=users.PASSWORD_MAX,
        help_text="pve realm and root@pam only; leave empty to keep the current password.",
    )

    class Meta:
        model = User
        fields = ("userid", "enable", "expire", "firstname", "lastname", "email", "comment", "keys")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and not self.is_bound:
            self.fields["groups"].initial = list(self.instance.memberships.values_list("group_id", flat=True))

    def clean_userid(self) -> str:
        return str(_clean_id(ids.check_userid, self.cleaned_data["userid"]))


@admin.register(User)
class UserAdmin(ServiceAdmin[User]):
    """Proxmox's ``userid-group``: all users with User.Modify on /access/groups, else the members
    of the groups delegated to you; root@pam only by root@pam."""

    acl_root = "/access/groups"
    acl_view, acl_change = ("Sys.Audit", "User.Modify"), ("User.Modify",)
    form = UserForm
    list_display = ("userid", "realm", "enable", "expire", "firstname", "lastname", "email")
    list_filter = ("realm", "enable")
    search_fields = ("userid", "firstname", "lastname", "email")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("userid", "realm") if obj is not None else ()

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        queryset = admin.ModelAdmin.get_queryset(self, request)
        if is_superuser(request.user):
            return queryset
        visible = delegation.visible_users(request.user, self.acl_view + self.acl_change)
        return queryset if visible is None else queryset.filter(userid__in=visible)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if is_superuser(request.user):
            return True
        visible = delegation.visible_users(request.user, self.acl_view + self.acl_change)
        if obj is None:
            return visible is None or len(visible) > 1
        return visible is None or obj.userid in visible

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None:
            return delegation.may_modify_user(request.user, obj.userid)
        privs = list(self.acl_change)
        return (
            is_superuser(request.user)
            or has_privileges(request.user, "/access/groups", privs)
            or bool(delegation.groups_with(request.user, privs))
        )

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        realm_ids = Realm.objects.values_list("realm", flat=True)
        return any(has_privileges(request.user, f"/access/realm/{r}", ["Realm.AllocateUser"]) for r in realm_ids)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return self.has_change_permission(request) and self.has_add_permission(request)
        if obj.userid == SUPERUSER or not delegation.may_modify_user(request.user, obj.userid):
            return False
        return has_privileges(request.user, f"/access/realm/{obj.realm_id}", ["Realm.AllocateUser"])

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        data = form.cleaned_data
        groups = [group.groupid for group in data.get("groups", [])]
        fields = {k: data[k] for k in users.USER_FIELDS if k in data and (not change or k in form.changed_data)}
        password = data.get("new_password") or None
        if not change:
            services.add_user(obj.userid, actor=request.user, password=password, groups=groups, **fields)
            return
        services.modify_user(
            obj.userid, actor=request.user, groups=groups, version=self.loaded_version(request, change), **fields
        )
        if password:
            services.set_password(obj.userid, password, actor=request.user)

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        services.delete_user(obj.userid, actor=request.user)


class PoolForm(forms.ModelForm[Pool]):
    class Meta:
        model = Pool
        fields = ("poolid", "comment")

    def clean_poolid(self) -> str:
        return str(_clean_id(ids.check_pool_id, self.cleaned_data["poolid"]))


@admin.register(Pool)
class PoolAdmin(ServiceAdmin[Pool]):
    acl_root, acl_object = "/pool", "/pool/{poolid}"
    acl_view, acl_change = ("Pool.Audit",), ("Pool.Allocate",)
    form = PoolForm
    list_display = ("poolid", "comment")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("poolid",) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: Pool, form: Any, change: bool) -> None:
        comment = form.cleaned_data.get("comment", "")
        if change:
            services.modify_pool(
                obj.poolid, actor=request.user, comment=comment, version=self.loaded_version(request, change)
            )
        else:
            services.add_pool(obj.poolid, actor=request.user, comment=comment)

    def delete_model(self, request: HttpRequest, obj: Pool) -> None:
        services.delete_pool(obj.poolid, actor=request.user)


@admin.register(KeyMaterial)
class KeyMaterialAdmin(ReadOnlyAdmin[KeyMaterial]):
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
