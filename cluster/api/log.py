"""``GET /cluster/log``: the newest entries of the cluster log (Proxmox's: ``max``, default 50).

Callers without ``Sys.Syslog`` on ``/`` see only the entries written in their own name (an API
token's owner's), as pmxcfs filters the log by ident; each entry carries ``id = <uid>:<node>``.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import has_privileges, principal_of
from cluster.models import ClusterLogEntry
from portal.api import params
from portal.api.views import PVEAPIView, ok

DEFAULT_MAX = 50


class ClusterLogView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        values = params.collect(request, kwargs)
        with params.ParamCollector(values) as p:
            count = p.integer("max", minimum=0, maximum=100_000, default=0) or DEFAULT_MAX
        entries = ClusterLogEntry.objects.order_by("-time", "-version", "-uid")  # version: the order written
        if not has_privileges(request.user, "/", ["Sys.Syslog"]):
            entries = entries.filter(user=(principal_of(request.user) or "").partition("!")[0])
        return ok([
            {"uid": str(e.uid), "time": e.time, "pri": e.pri, "tag": e.tag, "pid": e.pid, "node": e.node,
             "user": e.user, "msg": e.msg, "id": f"{e.uid}:{e.node}"}
            for e in entries[:count]
        ])  # fmt: skip
