"""Managing users, groups and API tokens: checked, delegated as Proxmox delegates, audited, one change set each.

Every function takes ``actor`` (who asks: a request's user, a token's user, or root@pam for
``pveum``), applies Proxmox's permission rules for it (``authz.delegation``), checks its input
fully before writing (bad input is a clear ``AccessError`` and changes nothing) and writes the
change together with its cluster-log entry in one ``transaction.atomic`` block (one change set).
"""

from __future__ import annotations

import time
from typing import Any

from django.db import transaction

from authz import audit, delegation, ids, tickets
from authz.exceptions import AccessError
from authz.models import SUPERUSER, ACLEntry, APIToken, Group, GroupMember, Realm, User
from authz.permissions import has_privileges, principal_of

CLUSTER = "cluster"
USER_FIELDS = ("enable", "expire", "firstname", "lastname", "email", "comment", "keys")
PASSWORD_MIN, PASSWORD_MAX = 5, 64


def _text(name: str, value: Any, max_length: int = 4096) -> str:
    text = str(value)
    if "\n" in text or "\r" in text or len(text) > max_length:
        raise AccessError(f"invalid value for {name}")
    return text


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
            checked[key] = _text(key, value, 255 if key in ("firstname", "lastname", "email") else 4096)
    return checked


def _group_ids(groups: Any) -> list[str]:
    return sorted({ids.check_group_id(groupid) for groupid in groups})


def _existing_groups(groupids: list[str]) -> None:
    found = set(Group.objects.filter(groupid__in=groupids).values_list("groupid", flat=True))
    missing = [groupid for groupid in groupids if groupid not in found]
    if missing:
        raise AccessError(f"no such group ('{missing[0]}')")


def _user(userid: str) -> User:
    user = User.objects.filter(userid=userid).select_related("realm").first()
    if user is None:
        raise AccessError(f"no such user ('{userid}')")
    return user


def _check_password(password: Any) -> str:
    if not isinstance(password, str) or not PASSWORD_MIN <= len(password) <= PASSWORD_MAX or "\0" in password:
        raise AccessError(f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    return password


# --- users -----------------------------------------------------------------------------------


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
    user = _user(userid)
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
    user = _user(userid)
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
    user = _user(userid)
    delegation.check_realm_allocate_user(actor, userid)
    delegation.check_user_group(actor, userid)
    tokens = list(user.tokens.values_list("tokenid", flat=True))
    with transaction.atomic(using=CLUSTER):
        for entry in ACLEntry.objects.filter(type__in=("user", "token"), ugid__in=[userid, *tokens]):
            entry.delete()
        user.delete()
        audit.record(actor, f"removed user '{userid}'")


# --- groups ----------------------------------------------------------------------------------


def _group(groupid: str) -> Group:
    group = Group.objects.filter(groupid=groupid).first()
    if group is None:
        raise AccessError(f"no such group ('{groupid}')")
    return group


def add_group(groupid: str, *, actor: Any, comment: str = "", members: Any = ()) -> Group:
    """``POST /access/groups`` (Group.Allocate on /access/groups); members as the admin adds them."""
    ids.check_group_id(groupid)
    delegation.check(actor, "/access/groups", ["Group.Allocate"])
    comment = _text("comment", comment)
    if Group.objects.filter(groupid=groupid).exists():
        raise AccessError(f"group '{groupid}' already exists")
    group = Group(groupid=groupid, comment=comment)
    wanted = sorted(set(members))
    _check_members(actor, groupid, wanted, [])
    with transaction.atomic(using=CLUSTER):
        group.save(force_insert=True)
        for userid in wanted:
            GroupMember(group=group, user_id=userid).save()
        audit.record(actor, f"added group '{groupid}'" + (f" with {','.join(wanted)}" if wanted else ""))
    return group


def modify_group(groupid: str, *, actor: Any, comment: str, version: int | None = None) -> Group:
    """``PUT /access/groups/{groupid}``: the comment (Group.Allocate on the group)."""
    group = _group(groupid)
    delegation.check(actor, f"/access/groups/{groupid}", ["Group.Allocate"])
    group.comment = _text("comment", comment)
    if version is not None:
        group.version = version
    with transaction.atomic(using=CLUSTER):
        group.save()
        audit.record(actor, f"changed group '{groupid}' (comment)")
    return group


def _check_members(actor: Any, groupid: str, added: list[str], removed: list[str]) -> None:
    """Adding or removing a member is changing that user's groups: the same rules as ``modify_user``."""
    found = set(User.objects.filter(userid__in=added).values_list("userid", flat=True))
    for userid in added:
        if userid not in found:
            raise AccessError(f"no such user ('{userid}')")
    for userid in [*added, *removed]:
        delegation.require_superuser_for(actor, userid, "the groups")
    if not has_privileges(actor, "/access/groups", ["User.Modify"]):
        allowed = delegation.groups_with(actor, ["User.Modify"])
        if (added or removed) and groupid not in allowed:
            raise delegation.denied(f"/access/groups/{groupid}", ["User.Modify"])
        modifiable = delegation.users_in(allowed)
        for userid in added:
            if userid not in modifiable:
                raise delegation.denied()
    for userid in added:
        delegation.check_not_adding_self(actor, userid, [groupid])


def set_group_members(groupid: str, members: Any, *, actor: Any) -> None:
    """The admin's member list of a group: User.Modify on the group and on each user moved in or out."""
    _group(groupid)
    wanted = set(members)
    current = set(GroupMember.objects.filter(group_id=groupid).values_list("user_id", flat=True))
    added, removed = sorted(wanted - current), sorted(current - wanted)
    _check_members(actor, groupid, added, removed)
    if not added and not removed:
        return
    with transaction.atomic(using=CLUSTER):
        for userid in added:
            GroupMember(group_id=groupid, user_id=userid).save()
        for member in GroupMember.objects.filter(group_id=groupid, user_id__in=removed):
            member.delete()
        changes = [f"+{u}" for u in added] + [f"-{u}" for u in removed]
        audit.record(actor, f"changed members of group '{groupid}' ({', '.join(changes)})")


def delete_group(groupid: str, *, actor: Any) -> None:
    """The group and its ACL entries (Group.Allocate on the group), as one change set."""
    group = _group(groupid)
    delegation.check(actor, f"/access/groups/{groupid}", ["Group.Allocate"])
    with transaction.atomic(using=CLUSTER):
        for entry in ACLEntry.objects.filter(type="group", ugid=groupid):
            entry.delete()
        group.delete()
        audit.record(actor, f"removed group '{groupid}'")


# --- API tokens ------------------------------------------------------------------------------


def add_token(
    userid: str, name: str, *, actor: Any, privsep: bool = True, expire: int = 0, comment: str = ""
) -> tuple[APIToken, str]:
    """A new token and its secret (returned once, only its hash is stored): oneself, or User.Modify.

    A token holds at most its user's privileges (privilege separation intersects, ``privsep=0``
    is exactly the user), so creating one never raises anyone above its user.
    """
    tokenid = ids.make_tokenid(userid, name)
    user = _user(userid)
    delegation.require_superuser_for(actor, userid, "the API tokens")
    delegation.check_self_or_user_group(actor, userid)
    if APIToken.objects.filter(tokenid=tokenid).exists():
        raise AccessError("Token already exists.")
    if isinstance(expire, bool) or not isinstance(expire, int) or expire < 0 or (expire and expire <= time.time()):
        raise AccessError("expire must be in the future (or 0 = never)")
    secret = tickets.new_token_secret()
    token = APIToken(
        tokenid=tokenid,
        user=user,
        privsep=bool(privsep),
        expire=expire,
        comment=_text("comment", comment),
        secret_hash=tickets.hash_token_secret(secret),
    )
    with transaction.atomic(using=CLUSTER):
        token.save(force_insert=True)
        audit.record(actor, f"added API token '{tokenid}' (privsep={int(token.privsep)})")
    return token, secret


def delete_token(tokenid: str, *, actor: Any) -> None:
    """The token and its ACL entries: oneself, or User.Modify on the owner (from the token's row)."""
    token = APIToken.objects.filter(tokenid=tokenid).first()
    if token is None:
        raise AccessError(f"no such token '{tokenid}'")
    delegation.require_superuser_for(actor, token.user_id, "the API tokens")
    delegation.check_self_or_user_group(actor, token.user_id)
    with transaction.atomic(using=CLUSTER):
        for entry in ACLEntry.objects.filter(type="token", ugid=tokenid):
            entry.delete()
        token.delete()
        audit.record(actor, f"removed API token '{tokenid}'")
