"""Managing users: checked, delegated as Proxmox delegates, audited, one change set each.

Every function takes ``actor`` (who asks: a request's user, a token's user, or root@pam for
``pveum``), applies Proxmox's permission rules for it (``authz.delegation``), checks its input
fully before writing (bad input is a clear ``AccessError`` and changes nothing) and writes the
change together with its cluster-log entry in one ``transaction.atomic`` block (one change set).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from authz import audit, delegation, ids
from authz.exceptions import AccessError
from authz.models import SUPERUSER, ACLEntry, Group, GroupMember, Realm, User
from authz.permissions import principal_of
from authz.services._validation import existing_user, text

CLUSTER = "cluster"
USER_FIELDS = ("enable", "expire", "firstname", "lastname", "email", "comment", "keys")
PASSWORD_MIN, PASSWORD_MAX = 5, 64


def _user_fields(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(USER_FIELDS)
    if unknown:
        raise AccessError(f"unknown user option(s): {', '.join(sorted(unknown))}")
    checked: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "enable":
            checked[key] = bool(value)
        elif key == "expire":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise AccessError("expire must be an epoch time (0 = never)")
            checked[key] = value
        else:
            checked[key] = text(key, value, 255 if key in ("firstname", "lastname", "email") else 4096)
    return checked


def _group_ids(groups: Any) -> list[str]:
    return sorted({ids.check_group_id(groupid) for groupid in groups})


def _existing_groups(groupids: list[str]) -> None:
    found = set(Group.objects.filter(groupid__in=groupids).values_list("groupid", flat=True))
    missing = [groupid for groupid in groupids if groupid not in found]
    if missing:
        raise AccessError(f"no such group ('{missing[0]}')")


def _check_password(password: Any) -> str:
    if not isinstance(password, str) or not PASSWORD_MIN <= len(password) <= PASSWORD_MAX or "\0" in password:
        raise AccessError(f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    return password


def add_user(userid: str, *, actor: Any, password: str | None = None, groups: Any = (), **fields: Any) -> User:
    """``POST /access/users``: Realm.AllocateUser on the realm, User.Modify on every group given."""
    _name, realm_id = ids.split_userid(userid)
    groupids = _group_ids(groups)
    delegation.check_realm_allocate_user(actor, userid)
    delegation.check_user_group(actor, userid, mode="create", groups=groupids)
    checked = _user_fields(fields)
    realm = Realm.objects.filter(realm=realm_id).first()
    if realm is None:
        raise AccessError(f"domain '{realm_id}' does not exist")
    if User.objects.filter(userid=userid).exists():
        raise AccessError(f"user '{userid}' already exists")
    if password is not None and realm.type != "pve":
        raise AccessError("passwords can only be set for users of the 'pve' realm")
    _existing_groups(groupids)
    user = User(userid=userid, realm=realm, **checked)
    if password is not None:
        user.set_password(_check_password(password))
    with transaction.atomic(using=CLUSTER):
        user.save(force_insert=True)
        for groupid in groupids:
            GroupMember(group_id=groupid, user=user).save()
        audit.record(actor, f"added user '{userid}'" + (f" to groups {','.join(groupids)}" if groupids else ""))
    return user


def modify_user(
    userid: str,
    *,
    actor: Any,
    groups: Any = None,
    append: bool = False,
    version: int | None = None,
    **fields: Any,
) -> User:
    """``PUT /access/users/{userid}``: User.Modify on every group named, added or removed.

    As in Proxmox, a user holding User.Modify on some groups only (not on ``/access/groups``)
    must name the groups, all of them delegated to it. Nobody but root@pam adds itself to a group.
    """
    user = existing_user(userid)
    delegation.require_superuser_for(actor, userid, "the account")
    current = set(GroupMember.objects.filter(user_id=userid).values_list("group_id", flat=True))
    wanted = None if groups is None else _group_ids(groups)
    added = set(wanted or ()) - current
    removed = set() if wanted is None or append else current - set(wanted)
    delegation.check_user_group(actor, userid, mode="update", groups=wanted or (), removed=sorted(removed))
    delegation.check_not_adding_self(actor, userid, added)
    checked = _user_fields(fields)
    if wanted is not None:
        _existing_groups(wanted)
    for key, value in checked.items():
        setattr(user, key, value)
    if version is not None:
        user.version = version
    with transaction.atomic(using=CLUSTER):
        user.save()
        for groupid in sorted(added):
            GroupMember(group_id=groupid, user=user).save()
        for member in GroupMember.objects.filter(user_id=userid, group_id__in=removed):
            member.delete()
        changed = sorted(checked) + (["groups"] if added or removed else [])
        audit.record(actor, f"changed user '{userid}'" + (f" ({', '.join(changed)})" if changed else ""))
    return user


def set_password(userid: str, password: str, *, actor: Any) -> None:
    """Proxmox's password change: oneself, or Realm.AllocateUser and User.Modify; root@pam's by root@pam only."""
    user = existing_user(userid)
    delegation.require_superuser_for(actor, userid, "the password")
    if principal_of(actor) != userid:
        delegation.check_realm_allocate_user(actor, userid)
        delegation.check_user_group(actor, userid)
    if userid != SUPERUSER and user.realm.type != "pve":
        raise AccessError("passwords can only be set for users of the 'pve' realm")
    user.set_password(_check_password(password))
    with transaction.atomic(using=CLUSTER):
        user.save(update_fields=["password"])
        audit.record(actor, f"changed the password of user '{userid}'")


def delete_user(userid: str, *, actor: Any) -> None:
    """The user, its tokens, memberships and ACL entries (users and their tokens), as one change set."""
    if userid == SUPERUSER:
        raise AccessError("the superuser root@pam cannot be removed")
    user = existing_user(userid)
    delegation.check_realm_allocate_user(actor, userid)
    delegation.check_user_group(actor, userid)
    tokens = list(user.tokens.values_list("tokenid", flat=True))
    with transaction.atomic(using=CLUSTER):
        for entry in ACLEntry.objects.filter(type__in=("user", "token"), ugid__in=[userid, *tokens]):
            entry.delete()
        user.delete()
        audit.record(actor, f"removed user '{userid}'")
