"""Managing users, groups, roles, ACLs and API tokens: validation, delegation rules, one change set each.

Every operation checks its input fully before writing, so bad input is a clear ``AccessError``
and changes nothing; multi-row changes go through one ``transaction.atomic`` (one change set).
``actor`` is who asks: ``root@pam`` may do anything, others are held to Proxmox's rules.
"""

from __future__ import annotations

import re
import time
from typing import Any

from django.db import transaction

from authz import tickets
from authz.models import SUPERUSER, ACLEntry, APIToken, Group, GroupMember, Realm, Role, User
from authz.permissions import privileges
from authz.privileges import BUILTIN_ROLES, NO_ACCESS, InvalidPath, check_path, check_privileges

ID_RE = re.compile(r"[A-Za-z0-9.\-_]+")
CLUSTER = "cluster"


class AccessError(ValueError):
    """Bad input; nothing was changed."""


class AccessDenied(AccessError):
    """A refused delegation (HTTP 403); nothing was changed."""


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value) or len(value) > 64:
        raise AccessError(f"invalid {kind} '{value}'")
    return value


def role_privileges(roleid: str) -> frozenset[str]:
    if roleid in BUILTIN_ROLES:
        return BUILTIN_ROLES[roleid]
    role = Role.objects.filter(roleid=roleid).first()
    if role is None:
        raise AccessError(f"role '{roleid}' does not exist")
    return frozenset(role.privs)


# --- users -------------------------------------------------------------------------------


def add_user(userid: str, *, password: str | None = None, **fields: Any) -> User:
    if not tickets.is_valid_userid(userid):
        raise AccessError(f"invalid user id '{userid}'")
    realm = Realm.objects.filter(realm=userid.rsplit("@", 1)[1]).first()
    if realm is None:
        raise AccessError(f"domain '{userid.rsplit('@', 1)[1]}' does not exist")
    if User.objects.filter(userid=userid).exists():
        raise AccessError(f"user '{userid}' already exists")
    if password is not None and realm.type != "pve":
        raise AccessError("passwords can only be set for users of the 'pve' realm")
    user = User(userid=userid, realm=realm, **_user_fields(fields))
    if password is not None:
        user.set_password(password)
    user.save(force_insert=True)
    return user


def _user_fields(fields: dict[str, Any]) -> dict[str, Any]:
    allowed = {"enable", "expire", "firstname", "lastname", "email", "comment", "keys"}
    unknown = set(fields) - allowed
    if unknown:
        raise AccessError(f"unknown user option(s): {', '.join(sorted(unknown))}")
    for key, value in fields.items():
        if key == "expire" and (not isinstance(value, int) or value < 0):
            raise AccessError("expire must be an epoch time (0 = never)")
        if key != "enable" and key != "expire" and ("\n" in str(value) or len(str(value)) > 4096):
            raise AccessError(f"invalid value for {key}")
    return fields


def modify_user(userid: str, *, groups: list[str] | None = None, append: bool = False, **fields: Any) -> User:
    user = User.objects.filter(userid=userid).first()
    if user is None:
        raise AccessError(f"no such user ('{userid}')")
    for key, value in _user_fields(fields).items():
        setattr(user, key, value)
    wanted = None if groups is None else {_check_id("group id", g) for g in groups}
    if wanted is not None:
        missing = wanted - set(Group.objects.filter(groupid__in=wanted).values_list("groupid", flat=True))
        if missing:
            raise AccessError(f"no such group ('{sorted(missing)[0]}')")
    with transaction.atomic(using=CLUSTER):
        user.save()
        if wanted is not None:
            current = {m.group_id: m for m in GroupMember.objects.filter(user=user)}
            for groupid in wanted - set(current):
                GroupMember(group_id=groupid, user=user).save()
            if not append:
                for groupid in set(current) - wanted:
                    current[groupid].delete()
    return user


def delete_user(userid: str) -> None:
    """The user, its tokens, memberships and ACL entries (users and their tokens), as one change set."""
    if userid == SUPERUSER:
        raise AccessError("the superuser root@pam cannot be removed")
    user = User.objects.filter(userid=userid).first()
    if user is None:
        raise AccessError(f"no such user ('{userid}')")
    tokens = list(user.tokens.values_list("tokenid", flat=True))
    with transaction.atomic(using=CLUSTER):
        for entry in ACLEntry.objects.filter(type__in=("user", "token"), ugid__in=[userid, *tokens]):
            entry.delete()
        user.delete()


# --- groups and roles --------------------------------------------------------------------


def add_group(groupid: str, comment: str = "") -> Group:
    _check_id("group id", groupid)
    if Group.objects.filter(groupid=groupid).exists():
        raise AccessError(f"group '{groupid}' already exists")
    group = Group(groupid=groupid, comment=comment)
    group.save(force_insert=True)
    return group


def delete_group(groupid: str) -> None:
    group = Group.objects.filter(groupid=groupid).first()
    if group is None:
        raise AccessError(f"no such group ('{groupid}')")
    with transaction.atomic(using=CLUSTER):
        for entry in ACLEntry.objects.filter(type="group", ugid=groupid):
            entry.delete()
        group.delete()


def save_role(roleid: str, privs: list[str], *, create: bool, append: bool = False) -> Role:
    _check_id("role id", roleid)
    if roleid in BUILTIN_ROLES:
        raise AccessError(f"cannot modify special role '{roleid}'")
    try:
        names = check_privileges(privs)
    except ValueError as exc:
        raise AccessError(str(exc)) from None
    role = Role.objects.filter(roleid=roleid).first()
    if create and role is not None:
        raise AccessError(f"role '{roleid}' already exists")
    if not create and role is None:
        raise AccessError(f"role '{roleid}' does not exist")
    if role is None:
        role = Role(roleid=roleid, privs=names)
    else:
        role.privs = sorted(set(role.privs) | set(names)) if append else names
    role.save()
    return role


def delete_role(roleid: str) -> None:
    if roleid in BUILTIN_ROLES:
        raise AccessError(f"cannot delete special role '{roleid}'")
    role = Role.objects.filter(roleid=roleid).first()
    if role is None:
        raise AccessError(f"role '{roleid}' does not exist")
    with transaction.atomic(using=CLUSTER):
        for entry in ACLEntry.objects.filter(roleid=roleid):
            entry.delete()
        role.delete()


# --- ACLs ----------------------------------------------------------------------------------


def modify_acl(
    actor: Any,
    path: str,
    roles: list[str],
    *,
    users: list[str] = (),  # type: ignore[assignment]
    groups: list[str] = (),  # type: ignore[assignment]
    tokens: list[str] = (),  # type: ignore[assignment]
    propagate: bool = True,
    delete: bool = False,
) -> list[ACLEntry]:
    """``PUT /access/acl``: grant (or with ``delete`` revoke) roles on a path, validated and delegated."""
    try:
        path = check_path(path)
    except InvalidPath as exc:
        raise AccessError(str(exc)) from None
    if not roles or not (users or groups or tokens):
        raise AccessError("no roles, or no users, groups or tokens given")
    for roleid in roles:
        role_privileges(roleid)
    _check_delegation(actor, path, roles, propagate)
    targets: list[tuple[str, str]] = []
    for userid in users:
        if not User.objects.filter(userid=userid).exists():
            raise AccessError(f"user '{userid}' does not exist")
        targets.append(("user", userid))
    for groupid in groups:
        if not Group.objects.filter(groupid=groupid).exists():
            raise AccessError(f"group '{groupid}' does not exist")
        targets.append(("group", groupid))
    for tokenid in tokens:
        if not APIToken.objects.filter(tokenid=tokenid).exists():
            raise AccessError(f"token '{tokenid}' does not exist")
        targets.append(("token", tokenid))
    changed: list[ACLEntry] = []
    with transaction.atomic(using=CLUSTER):
        for kind, ugid in targets:
            for roleid in roles:
                key = ACLEntry.make_key(path, kind, ugid, roleid)
                existing = ACLEntry.objects.filter(key=key).first()
                if delete:
                    if existing is not None:
                        existing.delete()
                    continue
                entry = existing or ACLEntry(path=path, type=kind, ugid=ugid, roleid=roleid)
                entry.propagate = propagate
                entry.save()
                changed.append(entry)
    return changed


def _check_delegation(actor: Any, path: str, roles: list[str], propagate: bool) -> None:
    """§6.6 perm-modify: without Permissions.Modify, grant only what you hold, never NoAccess."""
    held = privileges(actor, path)
    if "Permissions.Modify" in held:
        return
    area_priv = {"/storage": "Datastore.Allocate", "/vms": "VM.Allocate", "/pool": "Pool.Allocate"}
    area = next((priv for prefix, priv in area_priv.items() if path == prefix or path.startswith(prefix + "/")), None)
    if area is None or area not in held:
        raise AccessDenied(f"Permission check failed ({path}, Permissions.Modify)")
    for roleid in roles:
        if roleid == NO_ACCESS:
            raise AccessDenied("NoAccess can only be granted with Permissions.Modify")
        missing = role_privileges(roleid) - held
        if missing:
            raise AccessDenied(f"Permission check failed ({path}, {sorted(missing)[0]})")


# --- API tokens ----------------------------------------------------------------------------


def add_token(
    userid: str, name: str, *, privsep: bool = True, expire: int = 0, comment: str = ""
) -> tuple[APIToken, str]:
    """A new token and its secret; the secret is returned once and only its hash is stored."""
    tokenid = f"{userid}!{name}"
    if not tickets.is_valid_tokenid(tokenid):
        raise AccessError(f"invalid token id '{tokenid}'")
    user = User.objects.filter(userid=userid).first()
    if user is None:
        raise AccessError(f"no such user ('{userid}')")
    if APIToken.objects.filter(tokenid=tokenid).exists():
        raise AccessError("Token already exists.")
    if expire and expire <= time.time():
        raise AccessError("expire must be in the future (or 0 = never)")
    secret = tickets.new_token_secret()
    token = APIToken(
        tokenid=tokenid,
        user=user,
        privsep=privsep,
        expire=expire,
        comment=comment,
        secret_hash=tickets.hash_token_secret(secret),
    )
    token.save(force_insert=True)
    return token, secret


def delete_token(tokenid: str) -> None:
    token = APIToken.objects.filter(tokenid=tokenid).first()
    if token is None:
        raise AccessError(f"no such token '{tokenid}'")
    with transaction.atomic(using=CLUSTER):
        for entry in ACLEntry.objects.filter(type="token", ugid=tokenid):
            entry.delete()
        token.delete()
