"""Django authentication backend over the realms (used by the admin login form)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from authz import authentication
from authz.exceptions import AuthenticationFailed
from authz.models import User


class RealmBackend:
    """Authenticates ``name@realm`` with the realm's method."""

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> User | None:
        if not username or password is None:
            return None
        try:
            return authentication.authenticate_password(username, password)
        except AuthenticationFailed:
            return None

    def get_user(self, user_id: str) -> User | None:
        try:
            return authentication.active_user(user_id)
        except AuthenticationFailed:
            return None
