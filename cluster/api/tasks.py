"""Task endpoints: ``/nodes/{node}/tasks[/{upid}[/status|/log]]`` and ``/cluster/tasks``.

Permissions as in Proxmox (pve-manager API2/Tasks.pm): anyone authenticated may call them;
a task's owner sees and stops it, others need ``Sys.Audit`` (reading) or ``Sys.Modify``
(stopping) on ``/nodes/<node>``; lists are filtered, not refused. A token's tasks are its
user's too, a user's tasks are not its tokens'. Requests for another node never get here: the
base view forwards them to that node.
"""

from __future__ import annotations

import gzip
import time
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from rest_framework.request import Request
from rest_framework.response import Response

from authz import ids
from authz.permissions import check, has_privileges, principal_of
from cluster.api.nodes import live_status, local_node_or_error
from portal.api import params
from portal.api.errors import APIError, ParameterError
from portal.api.views import PVEAPIView, ok
from portal.models import Task
from portal.tasks import entries as task_entries
from portal.tasks import runner
from portal.tasks.logs import log_path, read_log
from portal.tasks.upid import parse_upid

LIST_PARAMETERS = {
    "start",
    "limit",
    "userfilter",
    "typefilter",
    "vmid",
    "errors",
    "source",
    "since",
    "until",
    "statusfilter",
}
STATUS_TYPES = ("ok", "warning", "error", "unknown")
DOWNLOAD_COMPRESS_ABOVE = 1024  # bytes, as Proxmox


# --- Entries in Proxmox's shape ------------------------------------------------------------


def upid_fields(upid: str) -> dict[str, Any]:
    """The decoded UPID; a token's task has ``user`` and ``tokenid`` apart, as Proxmox reports it."""
    parsed = parse_upid(upid)
    user, tokenid = ids.split_principal(parsed.user)
    fields: dict[str, Any] = {
        "upid": upid,
        "node": parsed.node,
        "pid": parsed.pid,
        "pstart": parsed.pstart,
        "starttime": parsed.starttime,
        "type": parsed.type,
        "id": parsed.id,
        "user": user,
    }
    if tokenid:
        fields["tokenid"] = tokenid
    return fields


def status_entry(task: Task) -> dict[str, Any]:
    """``GET .../tasks/{upid}/status``: running or stopped, with the exit status once stopped."""
    entry = upid_fields(task.upid)
    if task.status == Task.STOPPED:
        entry.update(status="stopped", exitstatus=task.exitstatus)
    else:
        entry["status"] = "running"
    return entry


def list_entry(task: Task) -> dict[str, Any]:
    """``GET /nodes/{node}/tasks`` item: ``status`` is the exit status, ``RUNNING`` while active."""
    entry = upid_fields(task.upid)
    if task.status == Task.STOPPED:
        entry.update(endtime=task.endtime, status=task.exitstatus)
    else:
        entry["status"] = "RUNNING"
    return entry


def cluster_entry(item: dict[str, Any]) -> dict[str, Any] | None:
    """A published task as ``/cluster/tasks`` lists it; None if it is not a valid UPID."""
    try:
        entry = upid_fields(str(item.get("upid", "")))
    except ValueError:
        return None
    for key in ("endtime", "status"):
        if item.get(key) is not None:
            entry[key] = item[key]
    return entry


def caller(request: Request) -> str:
    return principal_of(request.user) or ""


def _is_token(request: Request) -> bool:
    return bool(getattr(request.user, "tokenid", None))


def owns(request: Request, task_user: str) -> bool:
    """Proxmox's ``check_task_user``: a token only sees its own tasks, a user its own and its tokens'."""
    user, token = ids.split_principal(task_user)
    return caller(request) in (task_user, user) if token else caller(request) == user


def _reject_unknown(values: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ParameterError(
            {
                name: "property is not defined in schema and the schema does not allow additional properties"
                for name in unknown
            }
        )


def _task_or_error(node: str, upid: str) -> Task:
    local_node_or_error(node)
    try:
        parse_upid(upid)
    except ValueError:
        raise ParameterError({"upid": "unable to parse worker upid"}) from None
    task = Task.objects.filter(upid=upid, node=node).first()
    if task is None:
        raise ParameterError({"upid": "no such task"})
    return task


def _check_task(request: Request, task: Task, privilege: str) -> None:
    if not owns(request, task.user):
        check(request.user, f"/nodes/{task.node}", [privilege])


class TaskListView(PVEAPIView):
    def get(self, request: Request, node: str, **kwargs: Any) -> Response:
        local_node_or_error(node)
        values = params.collect(request, {"node": node})
        _reject_unknown(values, LIST_PARAMETERS | {"node"})
        with params.ParamCollector(values) as p:
            start = p.integer("start", minimum=0, default=0)
            limit = p.integer("limit", minimum=0, default=50)
            userfilter = p.string("userfilter", max_length=128, default="")
            typefilter = p.string("typefilter", max_length=64, default="")
            vmid = p.integer("vmid", minimum=100, maximum=999_999_999, default=None)
            errors = p.boolean("errors", default=0)
            source = p.enum("source", ("archive", "active", "all"), default="archive")
            since = p.integer("since", default=None)
            until = p.integer("until", default=None)
            statusfilter = p.string("statusfilter", max_length=64, default=None)
        wanted = set(STATUS_TYPES)
        if errors:
            wanted.discard("ok")
        elif statusfilter is not None:
            wanted = {item.strip().lower() for item in statusfilter.replace(";", ",").split(",") if item.strip()}
            if wanted - set(STATUS_TYPES):
                raise ParameterError({"statusfilter": f"value must be a list of {', '.join(STATUS_TYPES)}"})
        tasks = task_entries.node_tasks(
            node, source=source, typefilter=typefilter, vmid=vmid, since=since, until=until, userfilter=userfilter
        )
        if not has_privileges(request.user, f"/nodes/{node}", ["Sys.Audit"]):
            tasks = tasks.filter(task_entries.owned_by_q(caller(request), is_token=_is_token(request)))
        if wanted != set(STATUS_TYPES):
            tasks = tasks.filter(task_entries.status_type_q(wanted))
        page = list(tasks[start : start + limit]) if limit > 0 else []
        return ok([list_entry(task) for task in page], total=tasks.count())


class TaskView(PVEAPIView):
    def get(self, request: Request, node: str, upid: str, **kwargs: Any) -> Response:
        _task_or_error(node, upid)
        return ok([{"name": "log"}, {"name": "status"}])

    def delete(self, request: Request, node: str, upid: str, **kwargs: Any) -> Response:
        """Stop the task (a queued one never starts); Sys.Modify on the node unless it is the caller's."""
        task = _task_or_error(node, upid)
        _check_task(request, task, "Sys.Modify")
        runner.stop(task.upid)
        return ok(None)


class TaskStatusView(PVEAPIView):
    def get(self, request: Request, node: str, upid: str, **kwargs: Any) -> Response:
        task = _task_or_error(node, upid)
        _check_task(request, task, "Sys.Audit")
        return ok(status_entry(task))


class TaskLogView(PVEAPIView):
    def get(self, request: Request, node: str, upid: str, **kwargs: Any) -> HttpResponse:
        task = _task_or_error(node, upid)
        _check_task(request, task, "Sys.Audit")
        values = params.collect(request, {"node": node, "upid": upid})
        _reject_unknown(values, {"node", "upid", "start", "limit", "download"})
        with params.ParamCollector(values) as p:
            start = p.integer("start", minimum=0, default=0)
            limit = p.integer("limit", minimum=0, default=50)
            download = p.boolean("download", default=0)
        if download:
            if "start" in values or "limit" in values:
                raise APIError(500, "'download' cannot be used together with 'start' or 'limit' parameters")
            return _download(task)
        lines, total = read_log(task.upid, start, limit)
        return ok(lines, total=total)


def _download(task: Task) -> HttpResponse:
    """The whole log as a file, gzip-encoded above 1 KiB (as Proxmox streams it)."""
    try:
        content = log_path(task.upid).read_bytes()
    except FileNotFoundError:
        content = b""
    upid = parse_upid(task.upid)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(upid.starttime))
    response = HttpResponse(content_type="text/plain")
    if len(content) > DOWNLOAD_COMPRESS_ABOVE:
        content = gzip.compress(content)
        response["Content-Encoding"] = "gzip"
    response.content = content
    response["Content-Disposition"] = f'attachment; filename="task-{upid.node}-{upid.type}-{stamp}.log"'
    return response


class ClusterTasksView(PVEAPIView):
    """Recent tasks of every online node: this node's from its index, the others' from their status."""

    def get(self, request: Request, **kwargs: Any) -> Response:
        _reject_unknown(params.collect(request, {}), set())
        local = settings.PVE_NODE_NAME
        published: list[dict[str, Any]] = list(task_entries.recent_tasks())
        for name, status in live_status().get("nodes", {}).items():
            if name != local and status.get("online"):
                published.extend(item for item in status.get("tasks", []) if isinstance(item, dict))
        everyone = has_privileges(request.user, "/", ["Sys.Audit"])
        entries = []
        for item in published:
            entry = cluster_entry(item)
            if entry is None:
                continue
            full_user = f"{entry['user']}!{entry['tokenid']}" if "tokenid" in entry else entry["user"]
            if everyone or owns(request, full_user):
                entries.append(entry)
        return ok(entries)
