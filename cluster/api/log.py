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
from portal.api.schema import INT, STR, Permission, array, endpoint, integer, obj
from portal.api.views import PVEAPIView, ok

DEFAULT_MAX = 50


ENTRY = obj(
    {"uid": STR, "time": INT, "pri": INT, "tag": STR, "pid": INT, "node": STR, "user": STR, "msg": STR, "id": STR}
)


class ClusterLogView(PVEAPIView):
    @endpoint(
        "Read the cluster log, newest first.",
        Permission(user="all", description="Every entry with Sys.Syslog on /; else only your own."),
        {"max": integer("At most this many entries (0: 50).", minimum=0, maximum=100_000, optional=True, default=0)},
        returns=array(ENTRY),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        count = values["max"] or DEFAULT_MAX
        entries = ClusterLogEntry.objects.order_by("-time", "-version", "-uid")  # version: the order written
        if not has_privileges(request.user, "/", ["Sys.Syslog"]):
            entries = entries.filter(user=(principal_of(request.user) or "").partition("!")[0])
        return ok([
            {"uid": str(e.uid), "time": e.time, "pri": e.pri, "tag": e.tag, "pid": e.pid, "node": e.node,
             "user": e.user, "msg": e.msg, "id": f"{e.uid}:{e.node}"}
            for e in entries[:count]
        ])  # fmt: skip
