"""``/version``, ``/nodes``, ``/cluster/status`` and task endpoints."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import check, has_privileges
from cluster import clock, nodestatus, task_index
from cluster.models import Node, Task
from cluster.upid import parse_upid
from portal.api import params
from portal.api.errors import APIError, ParameterError
from portal.api.views import PVEAPIView, ok
from replicator import client
from replicator.exceptions import ReplicationError

VERSION = {"version": "9.1.1", "release": "9.1", "repoid": "pve-django", "console": "html5"}


def local_node_or_error(node: str) -> Node:
    """The node named in the path, which must be this node until requests are proxied."""
    row = Node.objects.filter(name=node).first()
    if row is None:
        raise ParameterError({"node": f"no such cluster node '{node}'"})
    if node != settings.PVE_NODE_NAME:
        raise APIError(595, f"no route to node '{node}' (forwarding to other nodes is not available yet)")
    return row


class VersionView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        return ok(dict(VERSION))


class NodesView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
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


class ClusterStatusView(PVEAPIView):
    def get(self, request: Request, **kwargs: Any) -> Response:
        check(request.user, "/", ["Sys.Audit"])
        nodes = list(Node.objects.all())
        live = _live_status()
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


def _live_status() -> dict[str, Any]:
    """Membership and volatile status from the local replicator; empty when it cannot answer."""
    try:
        answer = client.request({"op": "cluster_status"}, timeout=5)
        status = client.status()
    except ReplicationError:
        return {}
    return {**status, **answer}


def _task_or_error(node: str, upid: str) -> Task:
    local_node_or_error(node)
    try:
        parse_upid(upid)
    except ValueError:
        raise ParameterError({"upid": f"unable to parse worker upid '{upid}'"}) from None
    task = Task.objects.filter(upid=upid).first()
    if task is None:
        raise ParameterError({"upid": "no such task"})
    return task


def _may_see_task(request: Request, task: Task) -> bool:
    return task.user == getattr(request.user, "pk", None) or has_privileges(
        request.user, f"/nodes/{task.node}", ["Sys.Audit"]
    )


def task_entry(task: Task) -> dict[str, Any]:
    upid = parse_upid(task.upid)
    entry: dict[str, Any] = {
        "upid": task.upid,
        "node": upid.node,
        "pid": upid.pid,
        "pstart": upid.pstart,
        "starttime": upid.starttime,
        "type": upid.type,
        "id": upid.id,
        "user": upid.user,
        "status": task.status,
    }
    if task.status == "stopped":
        entry["exitstatus"] = task.exitstatus
        entry["endtime"] = task.endtime
    return entry


class TaskStatusView(PVEAPIView):
    def get(self, request: Request, node: str, upid: str, **kwargs: Any) -> Response:
        task = _task_or_error(node, upid)
        if not _may_see_task(request, task):
            check(request.user, f"/nodes/{node}", ["Sys.Audit"])
        return ok(task_entry(task))


class TaskLogView(PVEAPIView):
    def get(self, request: Request, node: str, upid: str, **kwargs: Any) -> Response:
        task = _task_or_error(node, upid)
        if not _may_see_task(request, task):
            check(request.user, f"/nodes/{node}", ["Sys.Audit"])
        values = params.collect(request, {"node": node, "upid": upid})
        start = params.integer(values.get("start", 0), "start", minimum=0)
        limit = params.integer(values.get("limit", 50), "limit", minimum=0)
        lines, total = task_index.read_log(task.upid, start, limit)
        return ok(lines, total=total)


class TaskListView(PVEAPIView):
    def get(self, request: Request, node: str, **kwargs: Any) -> Response:
        local_node_or_error(node)
        values = params.collect(request, {"node": node})
        start = params.integer(values.get("start", 0), "start", minimum=0)
        limit = params.integer(values.get("limit", 50), "limit", minimum=0)
        tasks = [t for t in Task.objects.filter(node=node)[: start + limit + 500] if _may_see_task(request, t)]
        return ok([task_entry(t) for t in tasks[start : start + limit]], total=len(tasks))
