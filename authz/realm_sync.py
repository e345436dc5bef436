"""``pveum realm sync``: users and groups of an LDAP realm copied from its directory, in bounded change sets.

Synced groups are named ``<group>-<realm>`` as in Proxmox. With ``remove_vanished`` the realm's
users and groups that the directory no longer has are removed, with their ACL entries.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction

from authz import access, ldap_realm
from authz.models import Group, GroupMember, Realm, User

BATCH = 200


def sync(
    realm_id: str, *, scope: str = "both", remove_vanished: bool = False, log: Callable[[str], None] = print
) -> dict:
    if scope not in ("users", "groups", "both"):
        raise access.AccessError("scope must be users, groups or both")
    realm = Realm.objects.filter(realm=realm_id).first()
    if realm is None:
        raise access.AccessError(f"domain '{realm_id}' does not exist")
    try:
        users, groups = ldap_realm.directory(realm)
    except (ldap_realm.RealmConfigError, ldap_realm.ldap.LDAPError) as exc:
        raise access.AccessError(f"realm sync of '{realm_id}' failed: {exc}") from None
    log(f"directory of realm '{realm_id}': {len(users)} users, {len(groups)} groups")
    summary = {"users_added": 0, "users_updated": 0, "users_removed": 0, "groups_added": 0, "groups_removed": 0}
    existing = {u.userid: u for u in User.objects.filter(realm_id=realm_id)}
    if scope in ("users", "both"):
        names = sorted(users)
        for start in range(0, len(names), BATCH):
            with transaction.atomic(using="cluster"):
                for name in names[start : start + BATCH]:
                    attrs = users[name]
                    fields = {
                        "firstname": attrs.get("givenName", ""),
                        "lastname": attrs.get("sn", ""),
                        "email": attrs.get("mail", ""),
                    }
                    user = existing.get(f"{name}@{realm_id}")
                    if user is None:
                        User(userid=f"{name}@{realm_id}", realm=realm, **fields).save(force_insert=True)
                        summary["users_added"] += 1
                        log(f"added user {name}@{realm_id}")
                    elif any(getattr(user, k) != v for k, v in fields.items()):
                        for key, value in fields.items():
                            setattr(user, key, value)
                        user.save()
                        summary["users_updated"] += 1
        if remove_vanished:
            for userid in sorted(set(existing) - {f"{n}@{realm_id}" for n in users}):
                access.delete_user(userid)
                summary["users_removed"] += 1
                log(f"removed vanished user {userid}")
    if scope in ("groups", "both"):
        present = {u for u in User.objects.filter(realm_id=realm_id).values_list("userid", flat=True)}
        for name in sorted(groups):
            groupid = f"{name}-{realm_id}"
            wanted = {f"{m}@{realm_id}" for m in groups[name]} & present
            with transaction.atomic(using="cluster"):
                if not Group.objects.filter(groupid=groupid).exists():
                    Group(groupid=groupid, comment=f"synced from realm {realm_id}").save(force_insert=True)
                    summary["groups_added"] += 1
                    log(f"added group {groupid}")
                current = {m.user_id: m for m in GroupMember.objects.filter(group_id=groupid)}
                for userid in sorted(wanted - set(current)):
                    GroupMember(group_id=groupid, user_id=userid).save()
                for userid in sorted(set(current) - wanted):
                    if userid.endswith(f"@{realm_id}"):
                        current[userid].delete()
        if remove_vanished:
            synced = {f"{n}-{realm_id}" for n in groups}
            for group in Group.objects.filter(groupid__endswith=f"-{realm_id}"):
                if group.groupid not in synced:
                    access.delete_group(group.groupid)
                    summary["groups_removed"] += 1
                    log(f"removed vanished group {group.groupid}")
    log(f"sync of realm '{realm_id}' done: {summary}")
    return summary
