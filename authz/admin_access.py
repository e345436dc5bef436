"""Admin pages for groups, roles, ACL entries and API tokens, validated by ``authz.access`` as pveum and the API are."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from authz import access
from authz.models import ACLEntry, APIToken, Group, GroupMember, Role, User
from authz.privileges import BUILTIN_ROLES, PRIVILEGES, InvalidPath, check_path
from portal.admin import AuditedModelAdmin


class GroupForm(forms.ModelForm):
    members = forms.ModelMultipleChoiceField(queryset=User.objects.all(), required=False)

    class Meta:
        model = Group
        fields = ("groupid", "comment")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and not self.is_bound:
            self.fields["members"].initial = list(self.instance.members.values_list("user_id", flat=True))

    def clean_groupid(self) -> str:
        try:
            return access._check_id("group id", self.cleaned_data["groupid"])
        except access.AccessError as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(Group)
class GroupAdmin(AuditedModelAdmin):
    acl_root, acl_object = "/access/groups", "/access/groups/{groupid}"
    acl_view, acl_change = ("Sys.Audit", "Group.Allocate"), ("Group.Allocate",)
    form = GroupForm
    list_display = ("groupid", "comment")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("groupid",) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: Group, form: Any, change: bool) -> None:
        wanted = {u.userid for u in form.cleaned_data.get("members", [])}
        with transaction.atomic(using="cluster"):  # the group and its members: one change set
            super().save_model(request, obj, form, change)
            current = {m.user_id: m for m in GroupMember.objects.filter(group_id=obj.groupid)}
            for userid in sorted(wanted - set(current)):
                GroupMember(group_id=obj.groupid, user_id=userid).save()
            for userid in sorted(set(current) - wanted):
                current[userid].delete()

    def delete_model(self, request: HttpRequest, obj: Group) -> None:
        access.delete_group(obj.groupid)  # with its ACL entries

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for group in queryset:
            access.delete_group(group.groupid)


class RoleForm(forms.ModelForm):
    privileges = forms.MultipleChoiceField(choices=[(p, p) for p in sorted(PRIVILEGES)], required=False)

    class Meta:
        model = Role
        fields = ("roleid",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and not self.is_bound:
            self.fields["privileges"].initial = list(self.instance.privs)

    def clean_roleid(self) -> str:
        roleid = self.cleaned_data["roleid"]
        if roleid in BUILTIN_ROLES:
            raise forms.ValidationError(f"cannot modify special role '{roleid}'")
        try:
            return access._check_id("role id", roleid)
        except access.AccessError as exc:
            raise forms.ValidationError(str(exc)) from None

    def save(self, commit: bool = True) -> Role:
        self.instance.privs = sorted(self.cleaned_data.get("privileges", []))
        return super().save(commit=commit)


@admin.register(Role)
class RoleAdmin(AuditedModelAdmin):
    acl_root, acl_view, acl_change = "/access", ("Sys.Audit", "Sys.Modify"), ("Sys.Modify",)
    form = RoleForm
    list_display = ("roleid", "privs")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("roleid",) if obj is not None else ()

    def delete_model(self, request: HttpRequest, obj: Role) -> None:
        access.delete_role(obj.roleid)  # with the ACL entries that use it

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for role in queryset:
            access.delete_role(role.roleid)


class ACLEntryForm(forms.ModelForm):
    class Meta:
        model = ACLEntry
        fields = ("path", "type", "ugid", "roleid", "propagate")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        try:
            data["path"] = check_path(data.get("path", ""))
            access.role_privileges(data.get("roleid", ""))
        except (InvalidPath, access.AccessError) as exc:
            raise forms.ValidationError(str(exc)) from None
        kind, ugid = data.get("type"), data.get("ugid", "")
        model = {"user": User, "group": Group, "token": APIToken}[kind]
        if not model.objects.filter(pk=ugid).exists():
            raise forms.ValidationError(f"{kind} '{ugid}' does not exist")
        return data


@admin.register(ACLEntry)
class ACLEntryAdmin(AuditedModelAdmin):
    acl_root, acl_view, acl_change = "/access", ("Sys.Audit", "Permissions.Modify"), ("Permissions.Modify",)
    form = ACLEntryForm
    list_display = ("path", "type", "ugid", "roleid", "propagate")
    list_filter = ("type", "roleid")
    search_fields = ("path", "ugid")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # the key is made of these: changing one is a new grant, not an edit
        return ("path", "type", "ugid", "roleid") if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: ACLEntry, form: Any, change: bool) -> None:
        try:
            access._check_delegation(request.user, obj.path, [obj.roleid], obj.propagate)
        except access.AccessError as exc:
            raise PermissionDenied(str(exc)) from None
        super().save_model(request, obj, form, change)


@admin.register(APIToken)
class APITokenAdmin(AuditedModelAdmin):
    """Tokens are created with pveum or the API (the secret is shown once there); here they are listed and revoked."""

    acl_root, acl_view, acl_change = "/access/groups", ("Sys.Audit", "User.Modify"), ("User.Modify",)
    list_display = ("tokenid", "privsep", "expire", "comment")
    exclude = ("secret_hash",)
    readonly_fields = ("tokenid", "user", "privsep", "expire", "comment")

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: APIToken) -> None:
        access.delete_token(obj.tokenid)  # with its ACL entries

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for token in queryset:
            access.delete_token(token.tokenid)
