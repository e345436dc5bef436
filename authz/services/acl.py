"""ACL entries: granted and revoked as Proxmox delegates, audited, one change set each."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from authz import audit, delegation, ids
from authz.exceptions import AccessError
from authz.models import ACLEntry, APIToken, Group, User
from authz.privileges import InvalidPath, check_path, normalize_path
from authz.services.roles import role_privileges

CLUSTER = "cluster"


def remove_object_access(path: str) -> int:
    """Drop every ACL entry on ``path`` (a removed VM or storage), as Proxmox's ``remove_vm_access`` does.

    Called inside the removing service's change set, so a reused VMID or storage id never
    inherits the grants of the object it replaces; the caller's audit entry covers it.
    """
    entries = list(ACLEntry.objects.filter(path=normalize_path(path)))
    for entry in entries:
        entry.delete()
    return len(entries)


def _targets(users: Any, groups: Any, tokens: Any) -> tuple[list[tuple[str, str]], list[str]]:
    """(kind, ugid) of every target, all of which exist, and the owners of the tokens (their rows' users)."""
    targets: list[tuple[str, str]] = []
    for userid in users:
        ids.check_userid(userid)
        if not User.objects.filter(userid=userid).exists():
            raise AccessError(f"user '{userid}' does not exist")
        targets.append(("user", userid))
    for groupid in groups:
        ids.check_group_id(groupid)
        if not Group.objects.filter(groupid=groupid).exists():
            raise AccessError(f"group '{groupid}' does not exist")
        targets.append(("group", groupid))
    owners: list[str] = []
    for tokenid in tokens:
        ids.split_tokenid(tokenid)
        owner = APIToken.objects.filter(tokenid=tokenid).values_list("user_id", flat=True).first()
        if owner is None:
            raise AccessError(f"token '{tokenid}' does not exist")
        targets.append(("token", tokenid))
        owners.append(owner)
    return targets, owners


def modify_acl(
    actor: Any,
    path: str,
    roles: list[str],
    *,
    users: Any = (),
    groups: Any = (),
    tokens: Any = (),
    propagate: bool = True,
    delete: bool = False,
) -> list[ACLEntry]:
    """``PUT /access/acl``: grant (or with ``delete`` revoke) roles on a path, as Proxmox delegates it.

    ``perm-modify`` on the path; without Permissions.Modify only roles within the actor's own
    privileges there, never NoAccess; entries naming root@pam or its tokens are root@pam's alone.
    """
    users, groups, tokens = list(users), list(groups), list(tokens)
    if not roles or not (users or groups or tokens):
        raise AccessError("no roles, or no users, groups or tokens given")
    try:  # an entry on a path that is no longer valid can still be removed, as in Proxmox
        path = normalize_path(path) if delete else check_path(path)
    except InvalidPath as exc:
        raise AccessError(str(exc)) from None
    delegation.check_perm_modify(actor, path)
    granted = {roleid: role_privileges(roleid) for roleid in roles}
    delegation.check_role_grant(actor, path, granted, propagate=propagate, delete=delete)
    targets, owners = _targets(users, groups, tokens)
    delegation.check_acl_targets(actor, users, owners)
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
        names = ",".join(f"@{ugid}" if kind == "group" else ugid for kind, ugid in targets)
        verb = "removed" if delete else f"granted (propagate={int(propagate)})"
        audit.record(actor, f"ACL {verb}: {','.join(roles)} on {path} for {names}")
    return changed
