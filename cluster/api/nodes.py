"""``/version``, ``/nodes`` and ``/cluster/status``; the task endpoints are in ``cluster.api.tasks``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import has_privileges
from cluster.models import Node
from cluster.status import clock, nodestatus
from portal.api.errors import APIError, ParameterError
from portal.api.schema import ANY_USER, BOOL, INT, NUM, STR, Permission, array, endpoint, obj
from portal.api.views import PVEAPIView, ok
from replicator import client
from replicator.exceptions import ReplicationError

VERSION = {"version": "9.1.1", "release": "9.1", "repoid": "pve-django", "console": "html5"}


def local_node_or_error(node: str) -> Node:
    """The node named in the path: this one (requests for another node were forwarded to it)."""
    row = Node.objects.filter(name=node).first()
    if row is None:
        raise ParameterError({"node": f"no such cluster node '{node}'"})
    if node != settings.PVE_NODE_NAME:  # only with forwarding disabled (PVEDisableProxy) or off
        raise APIError(500, f"request for node '{node}' reached node '{settings.PVE_NODE_NAME}'")
    return row


class RootIndexView(PVEAPIView):
    """``GET /``: the top-level directories (Proxmox's API2 index; any authenticated user)."""

    @endpoint("Directory index.", ANY_USER, returns=array(obj({"subdir": STR})))
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        return ok([{"subdir": name} for name in ("version", "cluster", "nodes", "storage", "access", "pools")])


class VersionView(PVEAPIView):
    @endpoint(
        "API version details.",
        ANY_USER,
        returns=obj({"version": STR, "release": STR, "repoid": STR}, console=STR),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        return ok(dict(VERSION))


NODE_ENTRY = obj(
    {"node": STR, "status": {"enum": ["online", "offline", "unknown"]}},
    type=STR,
    id=STR,
    level=STR,
    ssl_fingerprint=STR,
    cpu=NUM,
    maxcpu=INT,
    mem=INT,
    maxmem=INT,
    disk=INT,
    maxdisk=INT,
    uptime=INT,
)


class NodesView(PVEAPIView):
    @endpoint(
        "Cluster node index (usage figures where the caller has Sys.Audit on the node).",
        ANY_USER,
        returns=array(NODE_ENTRY),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        entries = []
        for node in Node.objects.all():
            local = node.name == settings.PVE_NODE_NAME
            entry: dict[str, Any] = {
                "node": node.name,
                "type": "node",
                "id": f"node/{node.name}",
                "status": "online" if local else "unknown",
                "level": "",
                "ssl_fingerprint": node.ssl_fingerprint,
            }
            if local and has_privileges(request.user, f"/nodes/{node.name}", ["Sys.Audit"]):
                stats = nodestatus.local_stats()
                entry.update({k: stats[k] for k in ("cpu", "maxcpu", "mem", "maxmem", "disk", "maxdisk", "uptime")})
            entries.append(entry)
        return ok(entries)


STATUS_ENTRY = obj(
    {"type": {"enum": ["cluster", "node"]}, "id": STR, "name": STR},
    nodes=INT,
    quorate=BOOL,
    version=INT,
    nodeid=INT,
    ip=STR,
    local=BOOL,
    online=BOOL,
    level=STR,
    clock_offset=NUM,
    clock_warning=BOOL,
)


class ClusterStatusView(PVEAPIView):
    @endpoint(
        "Cluster information: the cluster and each node, with quorum and clock skew.",
        Permission("/", ("Sys.Audit",)),
        returns=array(STATUS_ENTRY),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        nodes = list(Node.objects.all())
        live = live_status()
        board = live.get("nodes", {})
        clocks = clock.node_clocks(board) if live.get("transport") == "corosync" else {}  # skew needs two nodes
        entries: list[dict[str, Any]] = []
        if live.get("transport") == "corosync":
            entries.append(
                {
                    "type": "cluster",
                    "id": "cluster",
                    "name": live.get("cluster_name", ""),
                    "nodes": len(nodes),
                    "quorate": int(bool(live.get("quorate"))),
                    "version": live.get("config_version", 0),
                }
            )
        for node in nodes:
            local = node.name == settings.PVE_NODE_NAME
            online = board.get(node.name, {}).get("online", int(local)) if board else int(local)
            entries.append(
                {
                    "type": "node",
                    "id": f"node/{node.name}",
                    "name": node.name,
                    "nodeid": node.nodeid if len(nodes) > 1 else 0,
                    "ip": board.get(node.name, {}).get("ip") or node.address,
                    "local": int(local),
                    "online": int(online),
                    "level": "",
                    **clock.api_fields(clocks.get(node.name)),
                }
            )
        return ok(entries)


def live_status() -> dict[str, Any]:
    """Membership and volatile status from the local replicator; empty when it cannot answer."""
    try:
        answer = client.request({"op": "cluster_status"}, timeout=5)
        status = client.status()
    except ReplicationError:
        return {}
    return {**status, **answer}
