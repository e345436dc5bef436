"""``/cluster/ha``: high availability is not managed by this cluster (yet), so no resource is.

Clients look a VM up there before they manage it (Terraform's ``GET /cluster/ha/resources/vm:<id>``,
expecting Proxmox's ``no such resource`` for an unmanaged VM); reading needs Sys.Audit on ``/``.
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import check
from portal.api.errors import APIError, ParameterError
from portal.api.views import PVEAPIView, ok

SID_RE = re.compile(r"(?:(vm|ct):)?([1-9][0-9]{2,8})")


class HAIndexView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        return ok([{"id": name} for name in ("resources", "groups", "status")])


class HAResourcesView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        check(request.user, "/", ["Sys.Audit"])
        return ok([])


class HAResourceView(PVEAPIView):
    def get(self, request: Request, sid: str, **kwargs: Any) -> Response:
        check(request.user, "/", ["Sys.Audit"])
        found = SID_RE.fullmatch(sid)
        if found is None:
            raise ParameterError({"sid": f"unable to parse service id '{sid[:64]}'"})
        raise APIError(500, f"no such resource '{found.group(1) or 'vm'}:{found.group(2)}'")
