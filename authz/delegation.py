"""Who may change whom: Proxmox's access-management checks (PVE-INTERNALS §6.6) and root@pam's own rules.

Every access service calls these before writing, so the API, the admin and ``pveum`` apply the
same rules. ``actor`` is the request's user (a User, or a token's user carrying ``tokenid``).
Refusals raise ``AccessDenied`` (HTTP 403), bad role grants ``AccessError`` (400, as Proxmox).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from authz.exceptions import AccessDenied, AccessError
from authz.ids import split_userid
from authz.models import SUPERUSER, Group, GroupMember
from authz.permissions import has_privileges, is_superuser, principal_of, privilege_flags
from authz.privileges import NO_ACCESS
from authz.restrict import restrict


def denied(path: str = "", privileges: Iterable[str] = ()) -> AccessDenied:
    """Proxmox's ``raise_perm_exc``: ``Permission check failed (<path>, <priv|priv>)``."""
    detail = f" ({path}, {'|'.join(privileges)})" if path else ""
    return AccessDenied(f"Permission check failed{detail}")


def require_superuser(actor: Any, what: str) -> None:
    """root@pam itself, not one of its tokens nor anyone holding every privilege."""
    if not is_superuser(actor):
        raise AccessDenied(f"Permission check failed ({what}: root@pam only)")


def require_superuser_for(actor: Any, userid: str, what: str) -> None:
    """Only root@pam may change root@pam's account, password, tokens or ACL entries."""
    if userid == SUPERUSER:
        require_superuser(actor, f"{what} of root@pam")


def acting_user(actor: Any) -> str:
    """The user behind ``actor``: itself, or the owner of its token (the token row's user)."""
    return str(getattr(actor, "pk", "") or "")


def check(actor: Any, path: str, privileges: Iterable[str], *, any_of: bool = False) -> None:
    """Proxmox's ``check`` (names the first privilege missing) or ``check_any`` (names them all)."""
    wanted = list(privileges)
    if any_of:
        if not has_privileges(actor, path, wanted, any_of=True):
            raise denied(path, wanted)
        return
    for privilege in wanted:
        if not has_privileges(actor, path, [privilege]):
            raise denied(path, [privilege])


def groups_with(actor: Any, privileges: Iterable[str]) -> set[str]:
    """Proxmox's ``filter_groups``: the groups on which ``actor`` holds any of ``privileges``."""
    groups = restrict(Group.objects.all(), actor, "/access/groups/{groupid}", privileges, any_of=True)
    return set(groups.values_list("groupid", flat=True))


def users_in(groups: Iterable[str]) -> set[str]:
    return set(GroupMember.objects.filter(group_id__in=list(groups)).values_list("user_id", flat=True))


def check_user_group(
    actor: Any,
    userid: str,
    privileges: Iterable[str] = ("User.Modify",),
    *,
    mode: str = "existing",
    groups: Iterable[str] = (),
    removed: Iterable[str] = (),
) -> None:
    """``userid-group``: the privileges on ``/access/groups``, or on a group of the user.

    ``mode`` ``create`` and ``update`` are Proxmox's ``groups_param``: every group named must be
    one the actor holds the privileges on, and at least one must be named. ``removed`` are the
    groups an update takes the user out of; each needs the privileges too (Proxmox would drop
    them silently).
    """
    wanted = list(privileges)
    if has_privileges(actor, "/access/groups", wanted, any_of=True):
        return
    allowed = groups_with(actor, wanted)
    if mode in ("create", "update"):
        named = list(groups)
        if not named:
            raise denied("/access/groups", wanted)
        for groupid in [*named, *removed]:
            if groupid not in allowed:
                raise denied(f"/access/groups/{groupid}", wanted)
    if mode != "create" and userid not in users_in(allowed):
        raise denied()


def visible_users(actor: Any, privileges: Iterable[str]) -> set[str] | None:
    """The users listed to ``actor`` (Proxmox's user index): None for all (``privileges`` on
    /access/groups), else the members of the groups where it holds them, and itself."""
    wanted = list(privileges)
    if has_privileges(actor, "/access/groups", wanted, any_of=True):
        return None
    return users_in(groups_with(actor, wanted)) | {str(principal_of(actor))}


def may_modify_user(actor: Any, userid: str, privileges: Iterable[str] = ("User.Modify",)) -> bool:
    """Whether ``userid-group`` passes for an existing user (and root@pam only for root@pam)."""
    if userid == SUPERUSER and not is_superuser(actor):
        return False
    try:
        check_user_group(actor, userid, privileges)
    except AccessDenied:
        return False
    return True


def check_realm_allocate_user(actor: Any, userid: str) -> None:
    """``userid-param Realm.AllocateUser``: on ``/access/realm/<realm of the user>``."""
    _name, realm = split_userid(userid)
    check(actor, f"/access/realm/{realm}", ["Realm.AllocateUser"])


def check_self_or_user_group(actor: Any, userid: str) -> None:
    """``['or', ['userid-param', 'self'], ['userid-group', ['User.Modify']]]`` (tokens are not self)."""
    if principal_of(actor) == userid:
        return
    check_user_group(actor, userid)


def check_not_adding_self(actor: Any, userid: str, added: Iterable[str]) -> None:
    """A delegated admin never puts itself into a group: that would give it the group's roles."""
    added = sorted(added)
    if added and userid == acting_user(actor) and not is_superuser(actor):
        raise AccessDenied(f"Permission check failed (a user cannot add itself to group '{added[0]}')")


# --- ACLs ------------------------------------------------------------------------------------

_AREA_PRIVILEGE = {"/storage/": "Datastore.Allocate", "/vms/": "VM.Allocate", "/pool/": "Pool.Allocate"}


def check_perm_modify(actor: Any, path: str) -> None:
    """``perm-modify``: Permissions.Modify on the path, or the area's allocate privilege below an area."""
    wanted = ["Permissions.Modify"]
    for prefix, privilege in _AREA_PRIVILEGE.items():
        if path.startswith(prefix) and len(path) > len(prefix):
            wanted.append(privilege)
    check(actor, path, wanted, any_of=True)


def check_role_grant(actor: Any, path: str, roles: dict[str, frozenset[str]], *, propagate: bool, delete: bool) -> None:
    """Without Permissions.Modify, grant or revoke only roles whose privileges the actor holds on
    ``path`` (propagated, to grant with propagation), and never NoAccess (Proxmox's ACL update)."""
    held = privilege_flags(actor, path)
    if "Permissions.Modify" in held:
        return
    verb = "remove" if delete else "add"
    for roleid, privileges in roles.items():
        if any(privilege not in held for privilege in privileges):
            raise AccessError(
                f"Cannot {verb} role '{roleid}' - requires 'Permissions.Modify' or superset of privileges."
            )
        if propagate and not delete and not all(held[privilege] for privilege in privileges):
            raise AccessError(
                f"Cannot {verb} role '{roleid}' with propagation - requires 'Permissions.Modify' "
                "or propagated superset of privileges."
            )
        if roleid == NO_ACCESS:
            raise AccessError(f"Cannot {verb} role '{roleid}' - requires 'Permissions.Modify'")


def check_acl_targets(actor: Any, users: Iterable[str], token_owners: Iterable[str]) -> None:
    """ACL entries naming root@pam or one of its tokens are root@pam's alone."""
    for userid in [*users, *token_owners]:
        require_superuser_for(actor, userid, "the ACL entries")
