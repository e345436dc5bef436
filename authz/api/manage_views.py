"""``/access/acl``, ``/access/users``, ``/access/groups``, ``/access/roles`` and API tokens.

Paths, parameters and answers as Proxmox's; the privilege checks are Proxmox's descriptors
(``userid-group``, ``perm-modify``, ...) over the one resolver. All changes go through
``authz.access``, which validates everything before writing.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz import access
from authz.models import SUPERUSER, ACLEntry, APIToken, Group, Role, User
from authz.permissions import check, has_privileges, principal_of
from authz.privileges import BUILTIN_ROLES
from portal.api import params
from portal.api.views import PVEAPIView, ok


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    text = ",".join(value) if isinstance(value, list) else str(value)
    return [item for item in text.replace(";", ",").replace(" ", ",").split(",") if item]


def _check_user_group(user: Any, target: str) -> None:
    """``userid-group``: User.Modify on /access/groups or on a group holding the target user."""
    if has_privileges(user, "/access/groups", ["User.Modify"]):
        return
    groups = User.objects.get(userid=target).memberships.values_list("group_id", flat=True)
    if any(has_privileges(user, f"/access/groups/{g}", ["User.Modify"]) for g in groups):
        return
    check(user, "/access/groups", ["User.Modify"])


def _user_or_404(userid: str) -> User:
    user = User.objects.filter(userid=userid).first()
    if user is None:
        raise access.AccessError(f"no such user ('{userid}')")
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
        "groups": list(user.memberships.order_by("group_id").values_list("group_id", flat=True)),
        "tokens": [_token_json(t) for t in user.tokens.all()],
    }


def _token_json(token: APIToken) -> dict[str, Any]:
    return {
        "tokenid": token.tokenid.split("!", 1)[1],
        "expire": token.expire,
        "privsep": int(token.privsep),
        "comment": token.comment,
    }


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


class AclView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        entries = []
        for entry in ACLEntry.objects.all():
            if has_privileges(request.user, entry.path, ["Permissions.Modify", "Sys.Audit"], any_of=True):
                entries.append(
                    {
                        "path": entry.path,
                        "type": entry.type,
                        "ugid": entry.ugid,
                        "roleid": entry.roleid,
                        "propagate": int(entry.propagate),
                    }
                )
        return ok(entries)

    def put(self, request: Request, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        with params.ParamCollector(values) as p:
            path = p.string("path", max_length=255)
            roles = p.string("roles", max_length=4096)
            propagate = p.boolean("propagate", default=1)
            delete = p.boolean("delete", default=0)
        access.modify_acl(
            request.user,
            path,
            _list(roles),
            users=_list(values.get("users")),
            groups=_list(values.get("groups")),
            tokens=_list(values.get("tokens")),
            propagate=bool(propagate),
            delete=bool(delete),
        )
        return ok(None)


class UsersView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        everyone = has_privileges(request.user, "/access/groups", ["User.Modify", "Sys.Audit"], any_of=True)
        me = principal_of(request.user)
        users = User.objects.all() if everyone else User.objects.filter(userid=str(me).split("!")[0])
        return ok([_user_json(u) for u in users])

    def post(self, request: Request, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        userid = params.string(values.get("userid"), "userid", max_length=64)
        realm = userid.rsplit("@", 1)[-1]
        check(request.user, f"/access/realm/{realm}", ["Realm.AllocateUser"])
        groups = _list(values.get("groups"))
        for group in groups:
            check(request.user, f"/access/groups/{group}", ["User.Modify"])
        password = values.get("password")
        access.add_user(userid, password=str(password) if password else None, **_user_fields(values))
        if groups:
            access.modify_user(userid, groups=groups, append=True)
        return ok(None)


class UserView(PVEAPIView):
    def get(self, request: Request, userid: str, **kwargs: Any) -> Response:
        user = _user_or_404(userid)
        if principal_of(request.user) != userid:
            _check_user_group(request.user, userid)
        return ok(_user_json(user))

    def put(self, request: Request, userid: str, **kwargs: Any) -> Response:
        _user_or_404(userid)
        if userid == SUPERUSER and principal_of(request.user) != SUPERUSER:
            check(request.user, "/access", ["Permissions.Modify", "Sys.Modify"])
        _check_user_group(request.user, userid)
        values = params.collect(request, kwargs)
        groups = _list(values.get("groups")) if "groups" in values else None
        append = bool(params.boolean(values.get("append"), "append")) if values.get("append") is not None else False
        access.modify_user(userid, groups=groups, append=append, **_user_fields(values))
        return ok(None)

    def delete(self, request: Request, userid: str, **kwargs: Any) -> Response:
        _user_or_404(userid)
        _check_user_group(request.user, userid)
        check(request.user, f"/access/realm/{userid.rsplit('@', 1)[-1]}", ["Realm.AllocateUser"])
        access.delete_user(userid)
        return ok(None)


class GroupsView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        return ok(
            [
                {
                    "groupid": g.groupid,
                    "comment": g.comment,
                    "users": ",".join(g.members.values_list("user_id", flat=True)),
                }
                for g in Group.objects.all()
                if has_privileges(
                    request.user, f"/access/groups/{g.groupid}", ["Sys.Audit", "Group.Allocate"], any_of=True
                )
            ]
        )

    def post(self, request: Request, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        groupid = params.string(values.get("groupid"), "groupid", max_length=64)
        check(request.user, "/access/groups", ["Group.Allocate"])
        access.add_group(groupid, str(values.get("comment") or ""))
        return ok(None)


class GroupView(PVEAPIView):
    def _group(self, request: Request, groupid: str, privs: list[str]) -> Group:
        check(request.user, f"/access/groups/{groupid}", privs, any_of=True)
        group = Group.objects.filter(groupid=groupid).first()
        if group is None:
            raise access.AccessError(f"group '{groupid}' does not exist")
        return group

    def get(self, request: Request, groupid: str, **kwargs: Any) -> Response:
        group = self._group(request, groupid, ["Sys.Audit", "Group.Allocate"])
        members = sorted(group.members.values_list("user_id", flat=True))
        return ok({"comment": group.comment, "members": members})

    def put(self, request: Request, groupid: str, **kwargs: Any) -> Response:
        group = self._group(request, groupid, ["Group.Allocate"])
        values = params.collect(request, kwargs)
        group.comment = (
            params.string(values.get("comment", ""), "comment", max_length=4096) if values.get("comment") else ""
        )
        group.save()
        return ok(None)

    def delete(self, request: Request, groupid: str, **kwargs: Any) -> Response:
        self._group(request, groupid, ["Group.Allocate"])
        access.delete_group(groupid)
        return ok(None)


class RolesView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        roles = [{"roleid": r, "privs": ",".join(sorted(p)), "special": 1} for r, p in sorted(BUILTIN_ROLES.items())]
        roles += [{"roleid": r.roleid, "privs": ",".join(sorted(r.privs)), "special": 0} for r in Role.objects.all()]
        return ok(roles)

    def post(self, request: Request, **kwargs: Any) -> Response:
        check(request.user, "/access", ["Sys.Modify"])
        values = params.collect(request, kwargs)
        roleid = params.string(values.get("roleid"), "roleid", max_length=64)
        access.save_role(roleid, _list(values.get("privs")), create=True)
        return ok(None)


class RoleView(PVEAPIView):
    def get(self, request: Request, roleid: str, **kwargs: Any) -> Response:
        return ok({priv: 1 for priv in sorted(access.role_privileges(roleid))})

    def put(self, request: Request, roleid: str, **kwargs: Any) -> Response:
        check(request.user, "/access", ["Sys.Modify"])
        values = params.collect(request, kwargs)
        append = bool(values.get("append")) and str(values.get("append")) == "1"
        access.save_role(roleid, _list(values.get("privs")), create=False, append=append)
        return ok(None)

    def delete(self, request: Request, roleid: str, **kwargs: Any) -> Response:
        check(request.user, "/access", ["Sys.Modify"])
        access.delete_role(roleid)
        return ok(None)


def _check_token_owner(request: Request, userid: str) -> None:
    """``['or', ['userid-param', 'self'], ['userid-group', ['User.Modify']]]``."""
    _user_or_404(userid)
    if principal_of(request.user) != userid:
        _check_user_group(request.user, userid)


class TokensView(PVEAPIView):
    def get(self, request: Request, userid: str, **kwargs: Any) -> Response:
        _check_token_owner(request, userid)
        return ok([_token_json(t) for t in APIToken.objects.filter(user_id=userid)])


class TokenView(PVEAPIView):
    def get(self, request: Request, userid: str, tokenid: str, **kwargs: Any) -> Response:
        _check_token_owner(request, userid)
        token = APIToken.objects.filter(tokenid=f"{userid}!{tokenid}").first()
        if token is None:
            raise access.AccessError(f"no such token '{tokenid}' for user '{userid}'")
        return ok(_token_json(token))

    def post(self, request: Request, userid: str, tokenid: str, **kwargs: Any) -> Response:
        _check_token_owner(request, userid)
        values = params.collect(request, kwargs)
        with params.ParamCollector(values) as p:
            privsep = p.boolean("privsep", default=1)
            expire = p.integer("expire", minimum=0, default=0)
            comment = p.string("comment", default="")
        token, secret = access.add_token(userid, tokenid, privsep=bool(privsep), expire=expire, comment=comment)
        return ok({"full-tokenid": token.tokenid, "info": _token_json(token), "value": secret})

    def delete(self, request: Request, userid: str, tokenid: str, **kwargs: Any) -> Response:
        _check_token_owner(request, userid)
        access.delete_token(f"{userid}!{tokenid}")
        return ok(None)
