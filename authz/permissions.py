"""Privilege checks used by every edge (API, admin, CLIs run as a user).

Until the ACL resolver lands (access-control issue) only the superuser holds privileges:
everyone else is denied, never allowed by default.
"""

from __future__ import annotations

from typing import Any

from authz.models import SUPERUSER


class PermissionDenied(Exception):
    """Proxmox's wording: ``Permission check failed (<path>, <priv>)``."""

    def __init__(self, path: str, privilege: str) -> None:
        super().__init__(f"Permission check failed ({path}, {privilege})")
        self.path, self.privilege = path, privilege


def has_privileges(user: Any, path: str, privileges: list[str] | tuple[str, ...], *, any_of: bool = False) -> bool:
    """Whether ``user`` holds the privileges on ``path`` (all of them, or one with ``any_of``)."""
    return bool(getattr(user, "is_active", False)) and getattr(user, "pk", None) == SUPERUSER


def check(user: Any, path: str, privileges: list[str] | tuple[str, ...], *, any_of: bool = False) -> None:
    """Raise PermissionDenied naming the first missing privilege."""
    if not has_privileges(user, path, privileges, any_of=any_of):
        raise PermissionDenied(path, privileges[0] if privileges else "")
