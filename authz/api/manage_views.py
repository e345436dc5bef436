"""``/access/acl``, ``/access/users``, ``/access/groups``, ``/access/roles`` and API tokens.

Paths, parameters and answers as Proxmox's. Reads check Proxmox's descriptors here; every change
goes through ``authz.services``, which applies the same descriptors for the
caller, validates everything before writing and records who did it in the same change set.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz import delegation, ids, services
from authz.exceptions import AccessDenied, AccessError
from authz.models import ACLEntry, APIToken, Group, Role, User
from authz.permissions import has_privileges, principal_of
from authz.privileges import BUILTIN_ROLES
from authz.services.roles import role_privileges
from portal.api import params
from portal.api.views import PVEAPIView, ok


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    text = ",".join(value) if isinstance(value, list) else str(value)
    return [item for item in text.replace(";", ",").replace(" ", ",").split(",") if item]


def _user_or_error(userid: str) -> User:
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
        "groups": list(user.memberships.order_by("group_id").values_list("group_id", flat=True)),
        "tokens": [_token_json(t) for t in user.tokens.all()],
    }


def _token_json(token: APIToken) -> dict[str, Any]:
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


class AclView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        """Entries on paths where the caller may modify permissions, or all with Sys.Audit on /access."""
        audit = has_privileges(request.user, "/access", ["Sys.Audit"])
        visible: dict[str, bool] = {}
        entries = []
        for entry in ACLEntry.objects.all():
            if entry.path not in visible:
                visible[entry.path] = audit or _may_modify_permissions(request.user, entry.path)
            if visible[entry.path]:
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
        services.modify_acl(
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


def _may_modify_permissions(user: Any, path: str) -> bool:
    try:
        delegation.check_perm_modify(user, path)
    except AccessDenied:
        return False
    return True


class UsersView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        """Users the caller may modify or audit (all, or members of such groups), and always itself."""
        privs = ["User.Modify", "Sys.Audit"]
        users = User.objects.all()
        if not has_privileges(request.user, "/access/groups", privs, any_of=True):
            visible = delegation.users_in(delegation.groups_with(request.user, privs))
            visible.add(str(principal_of(request.user)))
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
            groups=_list(values.get("groups")),
            **_user_fields(values),
        )
        return ok(None)


class UserView(PVEAPIView):
    def get(self, request: Request, userid: str, **kwargs: Any) -> Response:
        user = _user_or_error(userid)
        delegation.check_user_group(request.user, userid, ["User.Modify", "Sys.Audit"])
        return ok(_user_json(user))

    def put(self, request: Request, userid: str, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        groups = _list(values.get("groups")) if "groups" in values else None
        append = bool(params.boolean(values.get("append"), "append")) if values.get("append") is not None else False
        services.modify_user(userid, actor=request.user, groups=groups, append=append, **_user_fields(values))
        return ok(None)

    def delete(self, request: Request, userid: str, **kwargs: Any) -> Response:
        services.delete_user(userid, actor=request.user)
        return ok(None)


class GroupsView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        privs = ["Sys.Audit", "Group.Allocate", "User.Modify"]
        return ok(
            [
                {
                    "groupid": g.groupid,
                    "comment": g.comment,
                    "users": ",".join(m.user_id for m in g.members.all()),
                }
                for g in Group.objects.prefetch_related("members")
                if has_privileges(request.user, f"/access/groups/{g.groupid}", privs, any_of=True)
            ]
        )

    def post(self, request: Request, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        groupid = params.string(values.get("groupid"), "groupid", max_length=64)
        comment = params.string(values.get("comment"), "comment", optional=True)
        services.add_group(groupid, actor=request.user, comment=comment)
        return ok(None)


class GroupView(PVEAPIView):
    def get(self, request: Request, groupid: str, **kwargs: Any) -> Response:
        delegation.check(request.user, f"/access/groups/{groupid}", ["Sys.Audit", "Group.Allocate"], any_of=True)
        group = Group.objects.filter(groupid=groupid).first()
        if group is None:
            raise AccessError(f"group '{groupid}' does not exist")
        members = sorted(group.members.values_list("user_id", flat=True))
        return ok({"comment": group.comment, "members": members})

    def put(self, request: Request, groupid: str, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        if values.get("comment") is not None:
            comment = params.string(values.get("comment"), "comment", max_length=4096)
            services.modify_group(groupid, actor=request.user, comment=comment)
        return ok(None)

    def delete(self, request: Request, groupid: str, **kwargs: Any) -> Response:
        services.delete_group(groupid, actor=request.user)
        return ok(None)


class RolesView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        roles = [{"roleid": r, "privs": ",".join(sorted(p)), "special": 1} for r, p in sorted(BUILTIN_ROLES.items())]
        roles += [{"roleid": r.roleid, "privs": ",".join(sorted(r.privs)), "special": 0} for r in Role.objects.all()]
        return ok(roles)

    def post(self, request: Request, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        roleid = params.string(values.get("roleid"), "roleid", max_length=64)
        services.save_role(roleid, _list(values.get("privs")), actor=request.user, create=True)
        return ok(None)


class RoleView(PVEAPIView):
    def get(self, request: Request, roleid: str, **kwargs: Any) -> Response:
        return ok({priv: 1 for priv in sorted(role_privileges(roleid))})

    def put(self, request: Request, roleid: str, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        append = bool(values.get("append")) and str(values.get("append")) == "1"
        services.save_role(roleid, _list(values.get("privs")), actor=request.user, create=False, append=append)
        return ok(None)

    def delete(self, request: Request, roleid: str, **kwargs: Any) -> Response:
        services.delete_role(roleid, actor=request.user)
        return ok(None)


def _check_token_owner(request: Request, userid: str) -> None:
    """``['or', ['userid-param', 'self'], ['userid-group', ['User.Modify']]]``."""
    _user_or_error(userid)
    delegation.check_self_or_user_group(request.user, userid)


class TokensView(PVEAPIView):
    def get(self, request: Request, userid: str, **kwargs: Any) -> Response:
        _check_token_owner(request, userid)
        return ok([_token_json(t) for t in APIToken.objects.filter(user_id=userid)])


class TokenView(PVEAPIView):
    def get(self, request: Request, userid: str, tokenid: str, **kwargs: Any) -> Response:
        _check_token_owner(request, userid)
        token = APIToken.objects.filter(tokenid=ids.make_tokenid(userid, tokenid), user_id=userid).first()
        if token is None:
            raise AccessError(f"no such token '{tokenid}' for user '{userid}'")
        return ok(_token_json(token))

    def post(self, request: Request, userid: str, tokenid: str, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        with params.ParamCollector(values) as p:
            privsep = p.boolean("privsep", default=1)
            expire = p.integer("expire", minimum=0, default=0)
            comment = p.string("comment", default="")
        token, secret = services.add_token(
            userid, tokenid, actor=request.user, privsep=bool(privsep), expire=expire, comment=comment
        )
        return ok({"full-tokenid": token.tokenid, "info": _token_json(token), "value": secret})

    def delete(self, request: Request, userid: str, tokenid: str, **kwargs: Any) -> Response:
        services.delete_token(ids.make_tokenid(userid, tokenid), actor=request.user)
        return ok(None)
