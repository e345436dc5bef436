"""The reconciler: ends this node's tasks whose process is gone and clears their leases.

Runs at every worker start, from beat every ``RECONCILE_INTERVAL`` seconds, and can be called
directly. It only judges tasks of its own node (only this node can see their processes) and
only acts on proof: a running task's process (pid plus start time) no longer exists, a queued
task's message is neither waiting in the broker nor delivered-and-unacknowledged, or a lease's
owner task is stopped or unknown here.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings

from portal.models import Task
from portal.tasks import locks, state, task_secrets
from portal.tasks.runner import end_dead, queue_of
from portal.tasks.upid import parse_upid

if TYPE_CHECKING:
    from kombu.transport.redis import Channel as RedisChannel

log = logging.getLogger(__name__)

RECONCILE_INTERVAL = 60.0  # seconds (beat)
QUEUE_GRACE = 60  # seconds a queued row may wait for its message to reach the broker
MESSAGE_LOST = "task message lost before a worker started it (broker restarted?)"


def reconcile(*, now: float | None = None) -> dict[str, int]:
    """One pass; how many tasks were ended and leases released."""
    node = settings.PVE_NODE_NAME
    now = time.time() if now is None else now
    ended = 0
    for task in Task.objects.filter(node=node, status__in=(Task.RUNNING, Task.FINISHING)):
        if not state.task_alive(task) and end_dead(task):
            log.warning("task %s: its process is gone; ended as an error", task.upid)
            ended += 1
    ended += _end_lost_messages(node, now)
    task_secrets.sweep(lambda upid: Task.objects.filter(upid=upid, status__in=Task.ACTIVE).exists())
    released = 0
    for kind, key, owner in locks.held_leases():
        if _owner_is_dead(owner, node) and locks.release(locks.LockSpec(kind, key, ""), owner):
            log.warning("released the %s %s lock of task %s, which is not running", kind, key, owner)
            released += 1
    return {"ended": ended, "released": released}


def _owner_is_dead(owner: str, node: str) -> bool:
    try:
        if parse_upid(owner).node != node:
            return False
    except ValueError:
        return False
    task = Task.objects.filter(upid=owner).first()
    return task is None or task.status == Task.STOPPED


def _end_lost_messages(node: str, now: float) -> int:
    queued = list(Task.objects.filter(node=node, status=Task.QUEUED, starttime__lt=int(now) - QUEUE_GRACE))
    if not queued:
        return 0
    pending = pending_task_ids(queue_of(node))
    if pending is None:  # the broker did not answer: nothing is proven
        return 0
    ended = 0
    for task in queued:
        if task.upid not in pending and state.finish(task.upid, MESSAGE_LOST, from_status=(Task.QUEUED,)):
            ended += 1
    return ended


def _message_id(raw: bytes | str) -> str | None:
    try:
        message: Any = json.loads(raw)
    except ValueError:
        return None
    if isinstance(message, list) and message:  # unacked entries are [message, exchange, routing key]
        message = message[0]
    if not isinstance(message, dict):
        return None
    headers = message.get("headers") or {}
    return headers.get("id") if isinstance(headers, dict) else None


def pending_task_ids(queue: str) -> set[str] | None:
    """Task ids waiting in ``queue`` or delivered but unacknowledged; None if the broker fails."""
    from portal.celery import app

    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=5)
            channel = cast("RedisChannel", connection.default_channel)  # the broker is always redis
            client = channel.client
            raw: list[bytes] = []
            for step in channel.priority_steps:  # kombu keeps one list per priority step
                queue_name = channel._q_for_pri(queue, step)  # type: ignore[attr-defined]  # kombu internal, not in celery-types
                raw.extend(client.lrange(queue_name, 0, -1))
            raw.extend(client.hvals(channel.unacked_key))
    except Exception as exc:
        log.warning("reconciler: the broker did not answer: %s", exc)
        return None
    return {task_id for task_id in map(_message_id, raw) if task_id}
