"""Custom roles: created, changed and removed with Sys.Modify on /access, audited, one change set each."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from authz import audit, delegation, ids
from authz.exceptions import AccessError
from authz.models import ACLEntry, Role
from authz.privileges import BUILTIN_ROLES, check_privileges

CLUSTER = "cluster"


def role_privileges(roleid: str) -> frozenset[str]:
    """The privileges of a built-in or custom role, read by the grant checks (``role 'x' does not exist`` else)."""
    if roleid in BUILTIN_ROLES:
        return BUILTIN_ROLES[roleid]
    role = Role.objects.filter(roleid=roleid).first()
    if role is None:
        raise AccessError(f"role '{roleid}' does not exist")
    return frozenset(role.privs)


def save_role(roleid: str, privs: list[str], *, actor: Any, create: bool, append: bool = False) -> Role:
    """``POST``/``PUT /access/roles``: Sys.Modify on /access; the built-in roles never change."""
    ids.check_role_id(roleid)
    delegation.check(actor, "/access", ["Sys.Modify"])
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
    with transaction.atomic(using=CLUSTER):
        role.save()
        audit.record(actor, f"{'added' if create else 'changed'} role '{roleid}' ({','.join(role.privs)})")
    return role


def delete_role(roleid: str, *, actor: Any) -> None:
    """The role and the ACL entries granting it (Sys.Modify on /access)."""
    delegation.check(actor, "/access", ["Sys.Modify"])
    if roleid in BUILTIN_ROLES:
        raise AccessError(f"cannot delete special role '{roleid}'")
    role = Role.objects.filter(roleid=roleid).first()
    if role is None:
        raise AccessError(f"role '{roleid}' does not exist")
    with transaction.atomic(using=CLUSTER):
        for entry in ACLEntry.objects.filter(roleid=roleid):
            entry.delete()
        role.delete()
        audit.record(actor, f"removed role '{roleid}'")
