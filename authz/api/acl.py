"""``/access/acl``: the ACL entries a caller may see, and granting or revoking roles."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz import delegation, services
from authz.exceptions import AccessDenied
from authz.models import ACLEntry
from authz.permissions import has_privileges
from portal.api import params
from portal.api.schema import BOOL, STR, Permission, array, endpoint, obj
from portal.api.views import PVEAPIView, ok

ACL_ENTRY = obj(
    {"path": STR, "type": {"enum": ["user", "group", "token"]}, "ugid": STR, "roleid": STR, "propagate": BOOL}
)


class AclView(PVEAPIView):
    @endpoint(
        "The access control list.",
        Permission(
            user="all", description="Entries on paths where you may modify permissions; all with Sys.Audit on /access."
        ),
        returns=array(ACL_ENTRY),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
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
            params.id_list(roles),
            users=params.id_list(values.get("users")),
            groups=params.id_list(values.get("groups")),
            tokens=params.id_list(values.get("tokens")),
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
