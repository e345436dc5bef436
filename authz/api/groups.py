"""``/access/groups``: groups and their members."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz import delegation, services
from authz.exceptions import AccessError
from authz.models import Group
from authz.restrict import restrict
from portal.api import params
from portal.api.schema import STR, Permission, array, endpoint, obj
from portal.api.views import PVEAPIView, ok


class GroupsView(PVEAPIView):
    @endpoint(
        "Group index.",
        Permission(user="all", description="Groups with Sys.Audit, Group.Allocate or User.Modify on them."),
        returns=array(obj({"groupid": STR}, comment=STR, users=STR)),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        privs = ["Sys.Audit", "Group.Allocate", "User.Modify"]
        return ok(
            [
                {
                    "groupid": g.groupid,
                    "comment": g.comment,
                    "users": ",".join(m.user_id for m in g.members.all()),
                }
                for g in restrict(
                    Group.objects.all(), request.user, "/access/groups/{groupid}", privs, any_of=True
                ).prefetch_related("members")
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
