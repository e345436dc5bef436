"""Proxmox's privileges, built-in roles and ACL paths (PVE-INTERNALS §6.2-6.4), as data.

The built-in roles are generated from the privilege table exactly as Proxmox generates them,
so the two cannot drift apart; they are never stored and cannot be changed.
"""

from __future__ import annotations

import re

# category -> (root-only, admin, user, audit)
_TABLE: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "VM": (
        (),
        (
            "VM.Config.Disk",
            "VM.Config.CPU",
            "VM.Config.Memory",
            "VM.Config.Network",
            "VM.Config.HWType",
            "VM.Config.Options",
            "VM.Allocate",
            "VM.Clone",
            "VM.GuestAgent.Unrestricted",
            "VM.Migrate",
            "VM.Replicate",
            "VM.Snapshot",
            "VM.Snapshot.Rollback",
        ),
        (
            "VM.Config.CDROM",
            "VM.Config.Cloudinit",
            "VM.Console",
            "VM.Backup",
            "VM.GuestAgent.FileRead",
            "VM.GuestAgent.FileSystemMgmt",
            "VM.GuestAgent.FileWrite",
            "VM.PowerMgmt",
        ),
        ("VM.Audit", "VM.GuestAgent.Audit"),
    ),
    "Sys": (
        ("Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork"),
        ("Sys.Console", "Sys.Syslog"),
        (),
        ("Sys.Audit",),
    ),
    "Datastore": (
        (),
        ("Datastore.Allocate", "Datastore.AllocateTemplate"),
        ("Datastore.AllocateSpace",),
        ("Datastore.Audit",),
    ),
    "SDN": ((), ("SDN.Allocate", "SDN.Audit"), ("SDN.Use",), ("SDN.Audit",)),
    "User": (("Realm.Allocate",), ("User.Modify", "Group.Allocate", "Realm.AllocateUser"), (), ()),
    "Pool": ((), ("Pool.Allocate",), ("Pool.Audit",), ("Pool.Audit",)),
    "Mapping": ((), ("Mapping.Modify",), ("Mapping.Use",), ("Mapping.Audit",)),
}
NO_GROUP = ("Permissions.Modify",)
ROOT_ONLY = frozenset(p for row in _TABLE.values() for p in row[0]) | frozenset(NO_GROUP)

PRIVILEGES: frozenset[str] = frozenset(p for row in _TABLE.values() for part in row for p in part) | frozenset(NO_GROUP)
NO_ACCESS = "NoAccess"


def _builtin_roles() -> dict[str, frozenset[str]]:
    roles: dict[str, frozenset[str]] = {"Administrator": PRIVILEGES, NO_ACCESS: frozenset()}
    audit: set[str] = set()
    pve_admin: set[str] = set()
    for category, (_root, admin, user, auditp) in _TABLE.items():
        if admin or user:
            roles[f"PVE{category}Admin"] = frozenset(admin + user + auditp)
        if user:
            roles[f"PVE{category}User"] = frozenset(user + auditp)
        audit.update(auditp)
        pve_admin.update(admin + user + auditp)
    roles["PVEAuditor"] = frozenset(audit)
    roles["PVEAdmin"] = frozenset(pve_admin - {"Mapping.Modify"})
    roles["PVETemplateUser"] = frozenset({"VM.Audit", "VM.Clone"})
    # Proxmox has no PVEUserUser (empty user list) and calls the Sys admin role PVESysAdmin.
    return roles


BUILTIN_ROLES: dict[str, frozenset[str]] = _builtin_roles()

_SEGMENT = r"[A-Za-z0-9.\-_]+"
_PATHS = [
    re.compile(p)
    for p in (
        r"/",
        r"/access",
        r"/access/groups",
        rf"/access/groups/{_SEGMENT}",
        r"/access/realm",
        rf"/access/realm/{_SEGMENT}",
        r"/nodes",
        rf"/nodes/{_SEGMENT}",
        r"/pool",
        rf"/pool/{_SEGMENT}(/{_SEGMENT}){{0,2}}",
        r"/storage",
        rf"/storage/{_SEGMENT}",
        r"/vms",
        r"/vms/[1-9][0-9]{2,8}",
        r"/mapping",
        rf"/mapping/{_SEGMENT}",
        rf"/mapping/{_SEGMENT}/{_SEGMENT}",
        r"/sdn",
        r"/sdn/zones",
        rf"/sdn/zones/{_SEGMENT}",
        rf"/sdn/zones/{_SEGMENT}/{_SEGMENT}",
        rf"/sdn/zones/{_SEGMENT}/{_SEGMENT}/([1-9][0-9]{{0,3}})",
        rf"/sdn/(controllers|dns|fabrics|ipams|prefix-lists|route-maps)(/{_SEGMENT})?",
    )
]


class InvalidPath(ValueError):
    """An ACL path Proxmox would refuse; never silently replaced by ``/``."""


def normalize_path(path: str) -> str:
    """Collapse ``//``, strip a trailing ``/``, ensure a leading ``/``; refuse other characters."""
    if not isinstance(path, str) or not re.fullmatch(r"[A-Za-z0-9.\-_/]+", path):
        raise InvalidPath(f"invalid ACL path '{path}'")
    path = "/" + "/".join(part for part in path.split("/") if part)
    return path


def check_path(path: str) -> str:
    """The normalised path if it is one of Proxmox's ACL paths, else InvalidPath."""
    normal = normalize_path(path)
    if not any(p.fullmatch(normal) for p in _PATHS):
        raise InvalidPath(f"invalid ACL path '{path}'")
    if normal.startswith("/sdn/zones/") and normal.count("/") == 5 and not 1 <= int(normal.rsplit("/", 1)[1]) <= 9999:
        raise InvalidPath(f"invalid ACL path '{path}'")
    return normal


def check_privileges(names: list[str] | tuple[str, ...]) -> list[str]:
    """Privilege names for a custom role; unknown ones are an error."""
    unknown = sorted(set(names) - PRIVILEGES)
    if unknown:
        raise ValueError(f"invalid privilege name(s): {', '.join(unknown)}")
    return sorted(set(names))
