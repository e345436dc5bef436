"""Managing groups and their members: checked, delegated as Proxmox delegates, audited, one change set each.

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
from authz.models import ACLEntry, Group, GroupMember, User
from authz.permissions import has_privileges
from authz.services._validation import text

CLUSTER = "cluster"


def _group(groupid: str) -> Group:
    group = Group.objects.filter(groupid=groupid).first()
    if group is None:
        raise AccessError(f"no such group ('{groupid}')")
    return group


def add_group(groupid: str, *, actor: Any, comment: str = "", members: Any = ()) -> Group:
    """``POST /access/groups`` (Group.Allocate on /access/groups); members as the admin adds them."""
    ids.check_group_id(groupid)
    delegation.check(actor, "/access/groups", ["Group.Allocate"])
    comment = text("comment", comment)
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
    group.comment = text("comment", comment)
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
