"""``/access/roles``: the built-in and custom roles."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz import services
from authz.models import Role
from authz.privileges import BUILTIN_ROLES
from authz.services.roles import role_privileges
from portal.api import params
from portal.api.schema import ANY_USER, BOOL, STR, array, endpoint, obj
from portal.api.views import PVEAPIView, ok


class RolesView(PVEAPIView):
    @endpoint(
        "Role index: the built-in roles (special 1) and the custom ones.",
        ANY_USER,
        returns=array(obj({"roleid": STR, "privs": STR, "special": BOOL})),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        roles = [{"roleid": r, "privs": ",".join(sorted(p)), "special": 1} for r, p in sorted(BUILTIN_ROLES.items())]
        roles += [{"roleid": r.roleid, "privs": ",".join(sorted(r.privs)), "special": 0} for r in Role.objects.all()]
        return ok(roles)

    def post(self, request: Request, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        roleid = params.string(values.get("roleid"), "roleid", max_length=64)
        services.save_role(roleid, params.id_list(values.get("privs")), actor=request.user, create=True)
        return ok(None)


class RoleView(PVEAPIView):
    def get(self, request: Request, roleid: str, **kwargs: Any) -> Response:
        return ok({priv: 1 for priv in sorted(role_privileges(roleid))})

    def put(self, request: Request, roleid: str, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        append = bool(values.get("append")) and str(values.get("append")) == "1"
        services.save_role(roleid, params.id_list(values.get("privs")), actor=request.user, create=False, append=append)
        return ok(None)

    def delete(self, request: Request, roleid: str, **kwargs: Any) -> Response:
        services.delete_role(roleid, actor=request.user)
        return ok(None)
