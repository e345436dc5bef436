"""Tasks as the API and the volatile status show them (Proxmox's field names and status types)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from authz import ids
from portal.models import Task
from portal.tasks.upid import parse_upid

PUBLISHED_FINISHED = 25  # finished tasks each node publishes besides its running ones (as Proxmox)


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


def status_type(task: Task) -> str:
    """``upid_normalize_status_type``: ok, warning, error, or unknown (also for active tasks)."""
    if task.status != Task.STOPPED or not task.exitstatus:
        return "unknown"
    if task.exitstatus == "OK":
        return "ok"
    if task.exitstatus.startswith("WARNINGS: "):
        return "warning"
    return "error"


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


def node_tasks(
    node: str,
    *,
    source: str = "archive",
    typefilter: str = "",
    vmid: int | None = None,
    since: int | None = None,
    until: int | None = None,
    userfilter: str = "",
) -> QuerySet[Task]:
    """A node's tasks, newest first, with ``GET /nodes/{node}/tasks``'s filters that the database can apply."""
    tasks = Task.objects.filter(node=node).order_by("-starttime", "-upid")
    if source == "archive":
        tasks = tasks.filter(status=Task.STOPPED)
    elif source == "active":
        tasks = tasks.exclude(status=Task.STOPPED)
    if typefilter:
        tasks = tasks.filter(type=typefilter)
    if vmid is not None:
        tasks = tasks.filter(vmid=str(vmid))
    if since is not None:
        tasks = tasks.filter(starttime__gte=since)
    if until is not None:
        tasks = tasks.filter(starttime__lte=until)
    if userfilter:
        tasks = tasks.filter(user__icontains=userfilter)  # Proxmox: m/\Q$userfilter\E/i
    return tasks


def published(task: Task) -> dict[str, Any]:
    """What the volatile status carries per task (receivers decode the UPID themselves)."""
    item: dict[str, Any] = {"upid": task.upid}
    if task.status == Task.STOPPED:
        item.update(endtime=task.endtime, status=task.exitstatus)
    return item


def recent_tasks() -> list[dict[str, Any]]:
    """This node's running tasks plus its last finished ones, newest first."""
    from django.conf import settings

    node = settings.PVE_NODE_NAME
    active = Task.objects.filter(node=node).exclude(status=Task.STOPPED).order_by("-starttime")
    finished = Task.objects.filter(node=node, status=Task.STOPPED).order_by("-endtime", "-starttime")
    return [published(task) for task in [*active, *finished[:PUBLISHED_FINISHED]]]


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
