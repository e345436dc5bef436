"""Admin pages for groups, roles, ACL entries and API tokens: the same services as pveum and the API."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from authz import delegation, ids, services
from authz.admin_base import ServiceAdmin
from authz.exceptions import AccessError
from authz.models import ACLEntry, APIToken, Group, Role, User
from authz.permissions import is_superuser, principal_of
from authz.privileges import BUILTIN_ROLES, PRIVILEGES, InvalidPath, check_path
from authz.services.roles import role_privileges


class GroupForm(forms.ModelForm[Group]):
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
            return ids.check_group_id(self.cleaned_data["groupid"])
        except ids.InvalidId as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(Group)
class GroupAdmin(ServiceAdmin[Group]):
    """The comment needs Group.Allocate on the group, each member moved in or out User.Modify (as
    changing that user's groups in the API does); nobody but root@pam adds itself."""

    acl_root, acl_object = "/access/groups", "/access/groups/{groupid}"
    acl_view, acl_change = ("Sys.Audit", "Group.Allocate", "User.Modify"), ("Group.Allocate", "User.Modify")
    acl_add = acl_delete = ("Group.Allocate",)
    form = GroupForm
    list_display = ("groupid", "comment")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("groupid",) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: Group, form: Any, change: bool) -> None:
        members = [user.userid for user in form.cleaned_data.get("members", [])]
        comment = form.cleaned_data.get("comment", "")
        if not change:
            services.add_group(obj.groupid, actor=request.user, comment=comment, members=members)
            return
        if "comment" in form.changed_data:
            services.modify_group(
                obj.groupid, actor=request.user, comment=comment, version=self.loaded_version(request, change)
            )
        services.set_group_members(obj.groupid, members, actor=request.user)

    def delete_model(self, request: HttpRequest, obj: Group) -> None:
        services.delete_group(obj.groupid, actor=request.user)  # with its ACL entries


class RoleForm(forms.ModelForm[Role]):
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
            return ids.check_role_id(roleid)
        except ids.InvalidId as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(Role)
class RoleAdmin(ServiceAdmin[Role]):
    acl_root, acl_view, acl_change = "/access", ("Sys.Audit", "Sys.Modify"), ("Sys.Modify",)
    form = RoleForm
    list_display = ("roleid", "privs")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("roleid",) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: Role, form: Any, change: bool) -> None:
        privileges = sorted(form.cleaned_data.get("privileges", []))
        services.save_role(obj.roleid, privileges, actor=request.user, create=not change)

    def delete_model(self, request: HttpRequest, obj: Role) -> None:
        services.delete_role(obj.roleid, actor=request.user)  # with the ACL entries that use it


class ACLEntryForm(forms.ModelForm[ACLEntry]):
    class Meta:
        model = ACLEntry
        fields = ("path", "type", "ugid", "roleid", "propagate")

    def clean(self) -> dict[str, Any]:
        super().clean()  # a ModelForm's clean() returns its cleaned_data
        data = self.cleaned_data
        if not self.instance._state.adding:
            return data  # only ``propagate`` changes; the rest is the entry's key
        try:
            data["path"] = check_path(data.get("path", ""))
            role_privileges(data.get("roleid", ""))
        except (InvalidPath, AccessError) as exc:
            raise forms.ValidationError(str(exc)) from None
        kind, ugid = data.get("type"), data.get("ugid", "")
        by_kind: dict[str | None, type[User | Group | APIToken]] = {"user": User, "group": Group, "token": APIToken}
        model = by_kind[kind]
        if not model.objects.filter(pk=ugid).exists():
            raise forms.ValidationError(f"{kind} '{ugid}' does not exist")
        return data


def _grant(request: HttpRequest, entry: ACLEntry, *, propagate: bool, delete: bool = False) -> None:
    """One entry through the API's service: perm-modify, role subset, root@pam's entries."""
    targets: dict[str, list[str]] = {"users": [], "groups": [], "tokens": []}
    targets[f"{entry.type}s"] = [entry.ugid]
    services.modify_acl(request.user, entry.path, [entry.roleid], propagate=propagate, delete=delete, **targets)


@admin.register(ACLEntry)
class ACLEntryAdmin(ServiceAdmin[ACLEntry]):
    acl_root, acl_view, acl_change = "/access", ("Sys.Audit", "Permissions.Modify"), ("Permissions.Modify",)
    form = ACLEntryForm
    list_display = ("path", "type", "ugid", "roleid", "propagate")
    list_filter = ("type", "roleid")
    search_fields = ("path", "ugid")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # the key is made of these: changing one is a new grant, not an edit
        return ("path", "type", "ugid", "roleid") if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: ACLEntry, form: Any, change: bool) -> None:
        _grant(request, obj, propagate=bool(form.cleaned_data.get("propagate")))
        obj.key = ACLEntry.make_key(obj.path, obj.type, obj.ugid, obj.roleid)  # for the admin's redirect

    def delete_model(self, request: HttpRequest, obj: ACLEntry) -> None:
        _grant(request, obj, propagate=obj.propagate, delete=True)


@admin.register(APIToken)
class APITokenAdmin(ServiceAdmin[APIToken]):
    """Tokens are created with pveum or the API (the secret is shown once there); here they are listed and revoked."""

    acl_root, acl_view, acl_change = "/access/groups", ("Sys.Audit", "User.Modify"), ("User.Modify",)
    list_display = ("tokenid", "privsep", "expire", "comment")
    exclude = ("secret_hash",)
    readonly_fields = ("tokenid", "user", "privsep", "expire", "comment")

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[APIToken]:
        """The tokens of the users the caller may see (as the user list), its own among them."""
        queryset = admin.ModelAdmin.get_queryset(self, request)
        if is_superuser(request.user):
            return queryset
        visible = delegation.visible_users(request.user, self.acl_view + self.acl_change)
        return queryset if visible is None else queryset.filter(user_id__in=visible)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if is_superuser(request.user):
            return True
        visible = delegation.visible_users(request.user, self.acl_view + self.acl_change)
        if obj is None:
            return visible is None or len(visible) > 1
        return visible is None or obj.user_id in visible

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return self.has_view_permission(request)
        own = principal_of(request.user) == obj.user_id
        return own or delegation.may_modify_user(request.user, obj.user_id)

    def save_model(self, request: HttpRequest, obj: APIToken, form: Any, change: bool) -> None:
        raise AccessError("API tokens are changed with pveum or the API")

    def delete_model(self, request: HttpRequest, obj: APIToken) -> None:
        services.delete_token(obj.tokenid, actor=request.user)  # with its ACL entries
