"""``/access/ticket``: ticket login and renewal, with the GUI's capabilities of the user."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.response import Response

from authz import authentication, ids, throttle, tickets
from authz.exceptions import AuthenticationFailed
from authz.models import SUPERUSER
from authz.permissions import has_privileges
from portal.api import params
from portal.api.errors import APIError
from portal.api.views import PVEAPIView, ok

PRIVILEGE_GROUPS: dict[str, tuple[str, ...]] = {
    "vms": ("VM.Allocate", "VM.Audit", "VM.Config.Options", "VM.Console", "VM.Migrate", "VM.PowerMgmt"),
    "storage": ("Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.Audit"),
    "access": ("User.Modify", "Group.Allocate", "Permissions.Modify"),
    "nodes": ("Sys.Audit", "Sys.Console", "Sys.Modify", "Sys.PowerMgmt", "Sys.Syslog"),
    "sdn": ("SDN.Allocate", "SDN.Audit", "SDN.Use"),
    "dc": ("Sys.Audit", "Sys.Modify"),
    "mapping": ("Mapping.Audit", "Mapping.Modify", "Mapping.Use"),
}


def capabilities(user: Any) -> dict[str, dict[str, int]]:
    """The GUI's ``cap`` object: which privileges the user holds anywhere, by area."""
    return {
        area: {priv: 1 for priv in privs if has_privileges(user, "/", [priv])}
        for area, privs in PRIVILEGE_GROUPS.items()
    }


def _credentials(request: Request, kwargs: dict[str, Any]) -> tuple[str, str, str | None]:
    """``username``, ``password`` and ``realm`` of a ticket request (ParameterError if malformed)."""
    values = params.collect(request, kwargs)
    username = params.string(values.get("username"), "username", max_length=64)
    password = params.string(values.get("password"), "password", max_length=4096)
    realm = values.get("realm")
    return username, password, str(realm) if realm else None


def _rhost(request: HttpRequest | Request) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))


class TicketView(PVEAPIView):
    """``POST /access/ticket``: password login, or renewal with a valid ticket as password."""

    public = True

    @staticmethod
    def login_attempt(request: HttpRequest) -> throttle.Attempt | None:
        """The password login this request makes, read as :meth:`post` reads it (for the login gate)."""
        try:
            request.body  # noqa: B018  (kept, so the view's own parsing reads the same bytes again)
            username, password, realm = _credentials(TicketView().initialize_request(request), {})
        except Exception:  # malformed: the view answers the error itself and checks no password
            return None
        if password.startswith("PVE:"):
            return None  # a renewal is checked by signature, not guessed
        return throttle.Attempt.of(throttle.login_name(username, realm), _rhost(request))

    def get(self, request: Request, **kwargs: Any) -> Response:
        return ok(None)

    def post(self, request: Request, **kwargs: Any) -> Response:
        username, password, realm = _credentials(request, kwargs)
        try:
            if password.startswith("PVE:"):
                # Renewal: a valid ticket of the same user; root@pam's ticket may get one for anybody.
                userid = ids.login_userid(username, str(realm) if realm else None)
                user = authentication.user_from_ticket(password)
                if user.userid != userid and user.userid != SUPERUSER:
                    raise AuthenticationFailed()
                if user.userid != userid:
                    user = authentication.active_user(userid)
            else:
                user = authentication.login(username, password, realm, rhost=_rhost(request))
            ticket, csrf = authentication.issue_ticket(user)
        except (AuthenticationFailed, tickets.TicketError):
            raise APIError(401, "authentication failure") from None
        return ok({"username": user.userid, "ticket": ticket, "CSRFPreventionToken": csrf, "cap": capabilities(user)})
