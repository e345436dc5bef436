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
from portal.api.errors import APIError, ParameterError
from portal.api.schema import ANY_USER, INT, NODE, STR, VMID, array, boolean, endpoint, enum, integer, obj, string
from portal.api.views import PVEAPIView, ok
from portal.models import Task
from portal.tasks import entries as task_entries
from portal.tasks import runner
from portal.tasks.logs import log_path, read_log
from portal.tasks.upid import parse_upid

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


TASK = obj(
    {"upid": STR, "node": STR, "pid": INT, "pstart": INT, "starttime": INT, "type": STR, "id": STR, "user": STR},
    tokenid=STR,
    endtime=INT,
    status=STR,
)
UPID = string("The task's unique ID.", max_length=512)
TASK_PERMISSION = "The caller's own tasks; others' with Sys.Audit (reading) or Sys.Modify (stopping) on /nodes/{node}."


class TaskListView(PVEAPIView):
    @endpoint(
        "Read the task list of one node (finished tasks).",
        ANY_USER.with_description("List tasks you own, and everyone's with Sys.Audit on /nodes/{node}."),
        {
            "node": NODE,
            "start": integer("List tasks beginning from this offset.", minimum=0, optional=True, default=0),
            "limit": integer("Only list this number of tasks.", minimum=0, optional=True, default=50),
            "userfilter": string("Only list tasks of this user.", max_length=128, optional=True, default=""),
            "typefilter": string("Only list tasks of this type.", max_length=64, optional=True, default=""),
            "vmid": VMID.but(optional=True, description="Only list tasks for this VM."),
            "errors": boolean("Only list tasks with a status of ERROR.", optional=True, default=0),
            "source": enum(
                ("archive", "active", "all"), "List archived, active or all tasks.", optional=True, default="archive"
            ),
            "since": integer("Only list tasks since this UNIX epoch.", optional=True),
            "until": integer("Only list tasks until this UNIX epoch.", optional=True),
            "statusfilter": string(
                "List of task states to show (ok, warning, error, unknown).", max_length=64, optional=True
            ),
        },
        returns=array(TASK),
        extra={"total": INT},
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        node = values["node"]
        local_node_or_error(node)
        start, limit, userfilter, typefilter = (
            values["start"],
            values["limit"],
            values["userfilter"],
            values["typefilter"],
        )
        vmid, errors, source, since, until = (
            values["vmid"],
            values["errors"],
            values["source"],
            values["since"],
            values["until"],
        )
        statusfilter = values["statusfilter"]
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


TASK_PARAMETERS = {"node": NODE, "upid": UPID}


class TaskView(PVEAPIView):
    @endpoint("The task's subdirectories.", ANY_USER, TASK_PARAMETERS, returns=array(obj({"name": STR})))
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        _task_or_error(values["node"], values["upid"])
        return ok([{"name": "log"}, {"name": "status"}])

    @endpoint(
        "Stop a task (a queued one never starts).",
        ANY_USER.with_description(TASK_PERMISSION),
        TASK_PARAMETERS,
        returns={"type": "null"},
    )
    def delete(self, request: Request, values: dict[str, Any]) -> Response:
        task = _task_or_error(values["node"], values["upid"])
        _check_task(request, task, "Sys.Modify")
        runner.stop(task.upid)
        return ok(None)


class TaskStatusView(PVEAPIView):
    @endpoint(
        "Read a task's status: running, or stopped with its exit status.",
        ANY_USER.with_description(TASK_PERMISSION),
        TASK_PARAMETERS,
        returns=obj({**TASK["properties"], "status": {"enum": ["running", "stopped"]}}, exitstatus=STR),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        task = _task_or_error(values["node"], values["upid"])
        _check_task(request, task, "Sys.Audit")
        return ok(status_entry(task))


class TaskLogView(PVEAPIView):
    @endpoint(
        "Read a task's log: lines numbered from 1, or the whole file with download.",
        ANY_USER.with_description(TASK_PERMISSION),
        {
            **TASK_PARAMETERS,
            "start": integer("Start at this line (0: the first).", minimum=0, optional=True),
            "limit": integer("At most this many lines.", minimum=0, optional=True),
            "download": boolean("The whole log as a file (not with start or limit).", optional=True, default=0),
        },
        returns=array(obj({"n": INT, "t": STR})),
        extra={"total": INT},
    )
    def get(self, request: Request, values: dict[str, Any]) -> HttpResponse:
        task = _task_or_error(values["node"], values["upid"])
        _check_task(request, task, "Sys.Audit")
        start, limit, download = values["start"], values["limit"], values["download"]
        if download:
            if start is not None or limit is not None:
                raise APIError(500, "'download' cannot be used together with 'start' or 'limit' parameters")
            return _download(task)
        lines, total = read_log(task.upid, start or 0, 50 if limit is None else limit)
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

    @endpoint(
        "Recent tasks of every online node.",
        ANY_USER.with_description("Your own tasks; everyone's with Sys.Audit on /."),
        returns=array(TASK),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
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
