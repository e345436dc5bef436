"""Input checks the access-control services share: one-line text, a user that exists."""

from __future__ import annotations

from typing import Any

from authz.exceptions import AccessError
from authz.models import User


def text(name: str, value: Any, max_length: int = 4096) -> str:
    """``value`` as one line of at most ``max_length`` characters (it is written into user.cfg)."""
    line = str(value)
    if "\n" in line or "\r" in line or len(line) > max_length:
        raise AccessError(f"invalid value for {name}")
    return line


def existing_user(userid: str) -> User:
    """The user ``userid`` (with its realm), or ``no such user``."""
    user = User.objects.filter(userid=userid).select_related("realm").first()
    if user is None:
        raise AccessError(f"no such user ('{userid}')")
    return user
