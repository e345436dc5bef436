"""Realm sync: users and groups of an LDAP realm copied from its directory, in bounded change sets.

Synced groups are named ``<group>-<realm>`` as in Proxmox. With ``remove_vanished`` the realm's
users and groups that the directory no longer has are removed, with their ACL entries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ldap
from django.db import transaction

from authz import audit, delegation, ids, ldap_realm
from authz.exceptions import AccessError
from authz.models import Group, GroupMember, Realm, User
from authz.services.groups import delete_group
from authz.services.users import delete_user

BATCH = 200


def _valid_users(users: dict[str, dict[str, str]], realm_id: str, log: Callable[[str], None]) -> list[str]:
    """Directory names that make valid user ids (no ``!``, no ``:``...); the others are skipped, said so."""
    valid = []
    for name in sorted(users):
        if ids.is_valid_userid(f"{name}@{realm_id}"):
            valid.append(name)
        else:
            log(f"skipped directory user '{name}': not a valid user name")
    return valid


def sync_realm(
    realm_id: str,
    *,
    actor: Any,
    scope: str = "both",
    remove_vanished: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, int]:
    """Proxmox's realm sync: Realm.AllocateUser on the realm and User.Modify on /access/groups."""
    if scope not in ("users", "groups", "both"):
        raise AccessError("scope must be users, groups or both")
    realm = Realm.objects.filter(realm=realm_id).first()
    if realm is None:
        raise AccessError(f"domain '{realm_id}' does not exist")
    delegation.check(actor, f"/access/realm/{realm_id}", ["Realm.AllocateUser"])
    delegation.check(actor, "/access/groups", ["User.Modify"])
    if realm.type not in ("ldap", "ad"):
        raise AccessError(f"Cannot sync realm type '{realm.type}'! Only LDAP/AD realms can be synced.")
    try:
        users, groups = ldap_realm.directory(realm)
    except (ldap_realm.RealmConfigError, ldap.LDAPError) as exc:
        raise AccessError(f"realm sync of '{realm_id}' failed: {exc}") from None
    log(f"directory of realm '{realm_id}': {len(users)} users, {len(groups)} groups")
    names = _valid_users(users, realm_id, log)
    summary = {"users_added": 0, "users_updated": 0, "users_removed": 0, "groups_added": 0, "groups_removed": 0}
    existing = {u.userid: u for u in User.objects.filter(realm_id=realm_id)}
    if scope in ("users", "both"):
        for start in range(0, len(names), BATCH):
            added, updated = [], []
            with transaction.atomic(using="cluster"):
                for name in names[start : start + BATCH]:
                    attrs = users[name]
                    fields = {
                        "firstname": attrs.get("givenName", "")[:255],
                        "lastname": attrs.get("sn", "")[:255],
                        "email": attrs.get("mail", "")[:255],
                    }
                    userid = f"{name}@{realm_id}"
                    user = existing.get(userid)
                    if user is None:
                        User(userid=userid, realm=realm, **fields).save(force_insert=True)
                        added.append(userid)
                        log(f"added user {userid}")
                    elif any(getattr(user, k) != v for k, v in fields.items()):
                        for key, value in fields.items():
                            setattr(user, key, value)
                        user.save()
                        updated.append(userid)
                if added or updated:
                    audit.record(actor, f"realm sync '{realm_id}': {len(added)} users added, {len(updated)} updated")
            summary["users_added"] += len(added)
            summary["users_updated"] += len(updated)
        if remove_vanished:
            for userid in sorted(set(existing) - {f"{n}@{realm_id}" for n in names}):
                delete_user(userid, actor=actor)
                summary["users_removed"] += 1
                log(f"removed vanished user {userid}")
    if scope in ("groups", "both"):
        present = set(User.objects.filter(realm_id=realm_id).values_list("userid", flat=True))
        synced: set[str] = set()
        for name in sorted(groups):
            groupid = f"{name}-{realm_id}"
            if not ids.is_valid_group_id(groupid):
                log(f"skipped directory group '{name}': not a valid group name")
                continue
            synced.add(groupid)
            wanted = {f"{m}@{realm_id}" for m in groups[name]} & present
            with transaction.atomic(using="cluster"):
                created = not Group.objects.filter(groupid=groupid).exists()
                if created:
                    Group(groupid=groupid, comment=f"synced from realm {realm_id}").save(force_insert=True)
                    summary["groups_added"] += 1
                    log(f"added group {groupid}")
                current = {m.user_id: m for m in GroupMember.objects.filter(group_id=groupid)}
                joined = sorted(wanted - set(current))
                for userid in joined:
                    GroupMember(group_id=groupid, user_id=userid).save()
                gone = sorted(u for u in set(current) - wanted if u.endswith(f"@{realm_id}"))
                for userid in gone:
                    current[userid].delete()
                if created or joined or gone:
                    audit.record(actor, f"realm sync '{realm_id}': group '{groupid}' +{len(joined)} -{len(gone)}")
        if remove_vanished:
            for group in Group.objects.filter(groupid__endswith=f"-{realm_id}"):
                if group.groupid not in synced:
                    delete_group(group.groupid, actor=actor)
                    summary["groups_removed"] += 1
                    log(f"removed vanished group {group.groupid}")
    log(f"sync of realm '{realm_id}' done: {summary}")
    return summary
