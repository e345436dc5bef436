"""``/access/users/{userid}/token``: a user's API tokens (the secret is shown once, at creation)."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz import delegation, ids, services
from authz.api.users import token_json, user_or_error
from authz.exceptions import AccessError
from authz.models import APIToken
from portal.api import params
from portal.api.views import PVEAPIView, ok


def _check_token_owner(request: Request, userid: str) -> None:
    """``['or', ['userid-param', 'self'], ['userid-group', ['User.Modify']]]``."""
    user_or_error(userid)
    delegation.check_self_or_user_group(request.user, userid)


class TokensView(PVEAPIView):
    def get(self, request: Request, userid: str, **kwargs: Any) -> Response:
        _check_token_owner(request, userid)
        return ok([token_json(t) for t in APIToken.objects.filter(user_id=userid)])


class TokenView(PVEAPIView):
    def get(self, request: Request, userid: str, tokenid: str, **kwargs: Any) -> Response:
        _check_token_owner(request, userid)
        token = APIToken.objects.filter(tokenid=ids.make_tokenid(userid, tokenid), user_id=userid).first()
        if token is None:
            raise AccessError(f"no such token '{tokenid}' for user '{userid}'")
        return ok(token_json(token))

    def post(self, request: Request, userid: str, tokenid: str, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        with params.ParamCollector(values) as p:
            privsep = p.boolean("privsep", default=1)
            expire = p.integer("expire", minimum=0, default=0)
            comment = p.string("comment", default="")
        token, secret = services.add_token(
            userid, tokenid, actor=request.user, privsep=bool(privsep), expire=expire, comment=comment
        )
        return ok({"full-tokenid": token.tokenid, "info": token_json(token), "value": secret})

    def put(self, request: Request, userid: str, tokenid: str, **kwargs: Any) -> Response:
        """Change privsep, expire or comment; the token's new settings (Proxmox's answer)."""
        values = params.collect(request, {"userid": userid, "tokenid": tokenid, **kwargs})
        with params.ParamCollector(values) as p:
            privsep = p.boolean("privsep", default=None)
            expire = p.integer("expire", minimum=0, default=None)
            comment = p.string("comment", default=None)
        token = services.modify_token(
            ids.make_tokenid(userid, tokenid),
            actor=request.user,
            privsep=None if privsep is None else bool(privsep),
            expire=expire,
            comment=comment,
        )
        return ok({key: value for key, value in token_json(token).items() if key != "tokenid"})

    def delete(self, request: Request, userid: str, tokenid: str, **kwargs: Any) -> Response:
        services.delete_token(ids.make_tokenid(userid, tokenid), actor=request.user)
        return ok(None)
