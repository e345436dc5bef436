"""Privilege checks used by every edge (API, admin, CLIs run as a user, websockets).

One resolver (``authz.resolver``, PVE-INTERNALS §6.6) decides; ``root@pam`` holds everything.
A principal is a user, or an API token (``user@realm!name``) carried as ``tokenid``.
"""

from __future__ import annotations

from typing import Any

from authz import resolver


class PermissionDenied(Exception):
    """Proxmox's wording: ``Permission check failed (<path>, <priv>)``."""

    def __init__(self, path: str, privilege: str) -> None:
        super().__init__(f"Permission check failed ({path}, {privilege})")
        self.path, self.privilege = path, privilege


def principal_of(user: Any) -> str | None:
    """The resolver's name for a request's user: its token id when it came with a token."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return getattr(user, "tokenid", None) or getattr(user, "pk", None)


def is_superuser(user: Any) -> bool:
    """Exactly ``root@pam`` logged in as itself: none of its tokens, nobody acting for it."""
    return principal_of(user) == resolver.SUPERUSER and bool(getattr(user, "is_active", False))


def privilege_flags(user: Any, path: str) -> dict[str, bool]:
    """The privileges ``user`` holds on ``path``, each with whether it is held propagated."""
    principal = principal_of(user)
    if principal is None or not getattr(user, "is_active", False):
        return {}
    return resolver.privilege_flags(resolver.state(), principal, path)


def privileges(user: Any, path: str) -> set[str]:
    return set(privilege_flags(user, path))


def has_privileges(user: Any, path: str, privileges_: list[str] | tuple[str, ...], *, any_of: bool = False) -> bool:
    """Whether ``user`` holds the privileges on ``path`` (all of them, or one with ``any_of``)."""
    held = privileges(user, path)
    wanted = set(privileges_)
    return bool(wanted & held) if any_of else wanted <= held


def check(user: Any, path: str, privileges_: list[str] | tuple[str, ...], *, any_of: bool = False) -> None:
    """Raise PermissionDenied naming the first missing privilege."""
    held = privileges(user, path)
    if any_of:
        if not set(privileges_) & held:
            raise PermissionDenied(path, privileges_[0] if privileges_ else "")
        return
    for privilege in privileges_:
        if privilege not in held:
            raise PermissionDenied(path, privilege)


def check_vm(user: Any, vmid: int, privileges_: list[str] | tuple[str, ...], *, any_of: bool = False) -> None:
    """Proxmox's ``check_vm_perm``: pool membership is part of the resolution of ``/vms/<vmid>``."""
    check(user, f"/vms/{vmid}", privileges_, any_of=any_of)
