"""The task index as the API and the volatile status read it: a node's tasks, status types, what a node publishes.

How the API shapes each entry (Proxmox's field names, a token's user and token apart) is the
API's business (``cluster.api.tasks``).
"""

from __future__ import annotations

from typing import Any

from django.db.models import F, Q, QuerySet

from portal.models import Task

PUBLISHED_FINISHED = 25  # finished tasks each node publishes besides its running ones (as Proxmox)


def status_type(task: Task) -> str:
    """``upid_normalize_status_type``: ok, warning, error, or unknown (also for active tasks)."""
    if task.status != Task.STOPPED or not task.exitstatus:
        return "unknown"
    if task.exitstatus == "OK":
        return "ok"
    if task.exitstatus.startswith("WARNINGS: "):
        return "warning"
    return "error"


def status_type_q(types: set[str]) -> Q:
    """``status_type`` as a query condition: the tasks whose status type is one of ``types``."""
    stopped = Q(status=Task.STOPPED) & ~Q(exitstatus="")
    conditions = {
        "ok": stopped & Q(exitstatus="OK"),
        "warning": stopped & Q(exitstatus__startswith="WARNINGS: "),
        "error": stopped & ~Q(exitstatus="OK") & ~Q(exitstatus__startswith="WARNINGS: "),
        "unknown": ~stopped,
    }
    wanted = Q(pk__in=[])
    for kind in types:
        wanted |= conditions[kind]
    return wanted


def owned_by_q(principal: str, *, is_token: bool) -> Q:
    """Proxmox's ``check_task_user`` as a query: a token's own tasks; a user's own and its tokens'
    (a user id never holds ``!``, so ``<user>!`` prefixes exactly its tokens' ids)."""
    if is_token:
        return Q(user=principal)
    return Q(user=principal) | Q(user__startswith=f"{principal}!")


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
    finished = Task.objects.filter(node=node, status=Task.STOPPED).order_by(
        F("endtime").desc(nulls_last=True), "-starttime"
    )  # nulls last on every database (PostgreSQL sorts them first when descending)
    return [published(task) for task in [*active, *finished[:PUBLISHED_FINISHED]]]
