"""DRF authentication: the PVEAuthCookie ticket (cookie or Authorization header) with CSRF."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from authz import authentication, tickets
from authz.exceptions import AuthenticationFailed
from authz.middleware import COOKIE

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSRF_HEADER = "HTTP_CSRFPREVENTIONTOKEN"


def ticket_from_request(request: Request) -> str | None:
    """The ticket from the cookie, or from ``Authorization: PVEAuthCookie=<ticket>``."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header.startswith(f"{COOKIE}="):
        return tickets.parse_cookie_value(header[len(COOKIE) + 1 :])
    raw = request.COOKIES.get(COOKIE)
    return tickets.parse_cookie_value(raw) if raw else None


class TicketAuthentication(BaseAuthentication):
    """Tickets are signed with the cluster key, so one issued by any node is valid on all."""

    def authenticate(self, request: Request) -> tuple[Any, dict[str, str]] | None:
        try:
            ticket = ticket_from_request(request)
        except tickets.TicketError:
            raise exceptions.AuthenticationFailed("invalid ticket") from None
        if not ticket:
            return None
        try:
            user = authentication.user_from_ticket(ticket)
        except AuthenticationFailed as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        if request.method not in SAFE_METHODS:
            token = request.META.get(CSRF_HEADER, "")
            if not token or not authentication.check_csrf(token, user.userid):
                raise exceptions.AuthenticationFailed("Permission denied - invalid csrf token")
        return user, {"type": "ticket", "ticket": ticket}

    def authenticate_header(self, request: Request) -> str:
        return COOKIE


class TokenUser:
    """A request authenticated by an API token: its user's attributes, resolved as the token."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, user: Any, tokenid: str) -> None:
        self._user = user
        self.tokenid = tokenid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._user, name)

    def __str__(self) -> str:
        return self.tokenid


class APITokenAuthentication(BaseAuthentication):
    """``Authorization: PVEAPIToken=<user@realm!name>=<secret>``; no CSRF token needed (not a cookie)."""

    def authenticate(self, request: Request) -> tuple[Any, dict[str, str]] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header.startswith(tickets.API_TOKEN_PREFIX):
            return None
        try:
            tokenid, secret = tickets.parse_api_token_header(header)
        except tickets.TicketError:
            raise exceptions.AuthenticationFailed("invalid API token") from None
        user = authentication.user_from_api_token(tokenid, secret)
        if user is None:
            raise exceptions.AuthenticationFailed("invalid API token")
        return TokenUser(user, tokenid), {"type": "token", "tokenid": tokenid}
