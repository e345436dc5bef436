"""``PUT /access/password``: change a user's password (Proxmox's).

Oneself, or with Realm.AllocateUser and User.Modify (root@pam's only by root@pam), for users of
the ``pve`` realm (and root@pam): :func:`authz.services.set_password` decides. Not with an API
token (Proxmox's ``allowtoken => 0``). Anyone but root@pam confirms with their own current
password (``confirmation-password``), checked as a login is: failures are counted and slowed
like wrong logins, so a stolen ticket cannot be turned into a changed password.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz import authentication, ids, services
from authz.exceptions import AccessDenied, AuthenticationFailed
from authz.models import SUPERUSER
from authz.permissions import principal_of
from portal.api import params
from portal.api.errors import APIError, ParameterError
from portal.api.views import PVEAPIView, ok


class PasswordView(PVEAPIView):
    def put(self, request: Request, **kwargs: Any) -> Response:
        if getattr(request.user, "tokenid", None):
            raise AccessDenied("Permission check failed (API tokens cannot change passwords)")
        values = params.collect(request, kwargs)
        with params.ParamCollector(values) as p:
            userid = p.string("userid", max_length=256)
            password = p.string("password", max_length=64)
            confirmation = p.string("confirmation-password", max_length=64, default=None)
        if not ids.is_valid_userid(userid):
            raise ParameterError({"userid": "invalid user id"})
        actor = principal_of(request.user) or ""
        if actor != SUPERUSER:
            if not confirmation:
                raise ParameterError(
                    {"confirmation-password": "the current password of the user changing it is needed"}
                )
            try:
                authentication.login(actor, confirmation, rhost=str(request.META.get("REMOTE_ADDR", "")))
            except AuthenticationFailed:
                raise APIError(401, "authentication failure: wrong confirmation password") from None
        services.set_password(userid, password, actor=request.user)
        return ok(None)
