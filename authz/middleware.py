"""Set ``request.user`` from the PVEAuthCookie ticket (admin and portal pages)."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject

from authz import authentication, resolver, tickets
from authz.exceptions import AuthenticationFailed

COOKIE = "PVEAuthCookie"


def user_for_request(request: HttpRequest) -> object:
    raw = request.COOKIES.get(COOKIE)
    if not raw:
        return AnonymousUser()
    try:
        return authentication.user_from_ticket(tickets.parse_cookie_value(raw))
    except AuthenticationFailed:
        return AnonymousUser()


class TicketAuthenticationMiddleware:
    """Replaces Django's session-based AuthenticationMiddleware: no per-node session table."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # A lazy user, as Django's own AuthenticationMiddleware sets (the stubs want the user itself).
        request.user = SimpleLazyObject(lambda: user_for_request(request))  # type: ignore[assignment]
        with resolver.request_scope():
            return self.get_response(request)
