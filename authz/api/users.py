"""``/access/users``: Proxmox's user endpoints (each user shows its groups and API tokens).

Paths, parameters and answers as Proxmox's. Reads check Proxmox's descriptors here; every change
goes through ``authz.services``, which applies the same descriptors for the caller, validates
everything before writing and records who did it in the same change set.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz import delegation, services
from authz.exceptions import AccessError
from authz.models import APIToken, User
from portal.api import params
from portal.api.schema import BOOL, INT, STR, Permission, array, boolean, endpoint, obj
from portal.api.views import PVEAPIView, ok


def user_or_error(userid: str) -> User:
    user = User.objects.filter(userid=userid).first()
    if user is None:
        raise AccessError(f"no such user ('{userid}')")
    return user


def _user_json(user: User) -> dict[str, Any]:
    return {
        "userid": user.userid,
        "enable": int(user.enable),
        "expire": user.expire,
        "firstname": user.firstname,
        "lastname": user.lastname,
        "email": user.email,
        "comment": user.comment,
        "keys": user.keys,
        "groups": sorted(m.group_id for m in user.memberships.all()),  # the prefetched rows: no query per user
        "tokens": [token_json(t) for t in user.tokens.all()],
    }


def token_json(token: APIToken) -> dict[str, Any]:
    return {"tokenid": token.name, "expire": token.expire, "privsep": int(token.privsep), "comment": token.comment}


def _user_fields(values: dict[str, Any]) -> dict[str, Any]:
    with params.ParamCollector(values) as p:
        fields = {
            "email": p.string("email", max_length=255, default=None),
            "firstname": p.string("firstname", max_length=255, default=None),
            "lastname": p.string("lastname", max_length=255, default=None),
            "comment": p.string("comment", default=None),
            "keys": p.string("keys", default=None),
            "expire": p.integer("expire", minimum=0, default=None),
            "enable": p.boolean("enable", default=None),
        }
    if fields["enable"] is not None:
        fields["enable"] = bool(fields["enable"])
    return {k: v for k, v in fields.items() if v is not None}


USER = obj(
    {"userid": STR},
    enable=BOOL,
    expire=INT,
    firstname=STR,
    lastname=STR,
    email=STR,
    comment=STR,
    keys=STR,
    groups=array(STR),
    tokens=array(obj({"tokenid": STR}, expire=INT, privsep=BOOL, comment=STR)),
)


class UsersView(PVEAPIView):
    @endpoint(
        "User index: the users the caller may modify or audit, and always itself.",
        Permission(user="all", description="Users with User.Modify or Sys.Audit on /access/groups/{group} of theirs."),
        {
            "enabled": boolean("Only enabled users.", optional=True, default=0),
            "full": boolean("With groups and tokens (always included here).", optional=True, default=0),
        },
        returns=array(USER),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        users = User.objects.all()
        if values["enabled"]:
            users = users.filter(enable=True)
        visible = delegation.visible_users(request.user, ["User.Modify", "Sys.Audit"])
        if visible is not None:
            users = users.filter(userid__in=visible)
        return ok([_user_json(u) for u in users.prefetch_related("memberships", "tokens")])

    def post(self, request: Request, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        userid = params.string(values.get("userid"), "userid", max_length=64)
        password = values.get("password")
        services.add_user(
            userid,
            actor=request.user,
            password=str(password) if password else None,
            groups=params.id_list(values.get("groups")),
            **_user_fields(values),
        )
        return ok(None)


class UserView(PVEAPIView):
    def get(self, request: Request, userid: str, **kwargs: Any) -> Response:
        user = user_or_error(userid)
        delegation.check_user_group(request.user, userid, ["User.Modify", "Sys.Audit"])
        return ok(_user_json(user))

    def put(self, request: Request, userid: str, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        groups = params.id_list(values.get("groups")) if "groups" in values else None
        append = bool(params.boolean(values.get("append"), "append")) if values.get("append") is not None else False
        services.modify_user(userid, actor=request.user, groups=groups, append=append, **_user_fields(values))
        return ok(None)

    def delete(self, request: Request, userid: str, **kwargs: Any) -> Response:
        services.delete_user(userid, actor=request.user)
        return ok(None)
