"""Long operations as Celery tasks with Proxmox UPIDs: submit, execute (in the worker), stop.

UPID scheme: the API must answer with the UPID at once, before any worker process is chosen,
so the UPID's ``pid``/``pstart`` name the process that *submitted* the task (unique together
with the start second, see ``index.create_task``). The process actually running it (a
Celery prefork child) is recorded in the task row (``pid``, ``pstart``, ``worker``) when it
starts; "running" is decided from that row and that process, as Proxmox decides it from the
UPID's process.

Delivery is at least once (acks late, a killed worker's message comes back), execution at most
once: a worker starts a task only by moving its row from ``queued`` to ``running``; a
redelivered message finds it running (in a live process: ignored) or stopped (ignored) or
running in a dead process (ended as an error, never run again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction

from portal.models import Task
from portal.tasks import locks, state, task_secrets
from portal.tasks.exceptions import TaskError
from portal.tasks.index import INTERRUPTED, OWN_PROCESS, TaskHandle, create_task
from portal.tasks.registry import get_operation
from portal.tasks.upid import UPID, parse_upid, process_start_ticks

log = logging.getLogger(__name__)

TASK_NAME = "cluster.run_task"
HARD_LIMIT_GRACE = 10  # at most this many seconds between the soft limit (an exception) and the kill
STOP_WAIT = 5.0  # seconds a stopped task gets to clean up before it is killed
WORKER_LOST = "task process died unexpectedly (worker lost)"


def timed_out(limit: int) -> str:
    return f"task exceeded its time limit ({limit} s)"


def kill_grace(limit: int) -> int:
    """Seconds a task gets after its soft time limit to clean up before its process is killed."""
    return min(HARD_LIMIT_GRACE, max(2, limit // 10))


def queue_of(node: str) -> str:
    """The Celery queue a node's worker consumes (``CELERY_TASK_DEFAULT_QUEUE`` there)."""
    return f"node.{node}"


def submit(
    type_: str,
    id_: str,
    user: str,
    operation: str,
    node: str | None = None,
    lock: locks.LockSpec | None = None,
    time_limit: int | None = None,
    secret_kwargs: dict[str, str] | None = None,
    **kwargs: Any,
) -> str:
    """Queue ``operation(task, **kwargs, **secret_kwargs)`` as a task on ``node`` (default: this node); its UPID.

    A ``lock`` that is taken already is refused here at once (Proxmox's ``check_lock``); the
    worker takes the lease when the task starts. Another node's task goes to that node's queue
    on this node's broker, so it only runs where brokers are shared; API requests for another
    node are forwarded to it instead and submit there. ``secret_kwargs`` (passwords) never enter
    the message: it carries a one-time reference to them (``portal.tasks.task_secrets``).
    """
    spec = get_operation(operation)
    limit = int(time_limit or spec.time_limit)
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError) as exc:
        raise TaskError(f"task arguments must be JSON: {exc}") from None
    if lock is not None:
        locks.check(lock)
    node = node or settings.PVE_NODE_NAME
    if secret_kwargs and (node != settings.PVE_NODE_NAME or set(secret_kwargs) & set(kwargs)):
        raise TaskError("a task's secret arguments are for a task of this node, named apart from its other arguments")
    lock_data = lock.as_dict() if lock is not None else None
    if node == settings.PVE_NODE_NAME:
        upid = create_task(type_, id_, user, status=Task.QUEUED, operation=operation, lock=lock_data).upid
    else:
        upid = str(UPID(node, os.getpid(), process_start_ticks(), int(time.time()), type_, id_, user))
    message = {"upid": upid, "operation": operation, "kwargs": kwargs, "lock": lock_data, "time_limit": limit}
    if secret_kwargs:
        message["secret"] = task_secrets.store(upid, secret_kwargs)
    transaction.on_commit(lambda: _send(node, message, limit), using="default")
    return upid


def _send(node: str, message: dict[str, Any], limit: int) -> None:
    from portal.celery import app

    try:
        app.send_task(
            TASK_NAME,
            kwargs=message,
            task_id=message["upid"],
            queue=queue_of(node),
            soft_time_limit=limit,
            time_limit=limit + kill_grace(limit),
        )
    except Exception as exc:
        state.finish(message["upid"], f"unable to queue the task: {exc}", from_status=(Task.QUEUED,))
        raise TaskError(f"unable to queue the task: {exc}") from exc


def _ensure_row(upid: str, operation: str, lock: dict[str, Any] | None) -> None:
    """A task submitted on another node has no row here until its worker picks it up."""
    parsed = parse_upid(upid)
    Task.objects.get_or_create(
        upid=upid,
        defaults={
            "node": parsed.node,
            "type": parsed.type,
            "vmid": parsed.id,
            "user": parsed.user,
            "starttime": parsed.starttime,
            "status": Task.QUEUED,
            "operation": operation,
            "lock": lock,
        },
    )


def execute(
    upid: str,
    operation: str,
    kwargs: dict[str, Any],
    lock: dict[str, Any] | None,
    *,
    worker: str,
    time_limit: int,
    secret: str | None = None,
) -> str:
    """Run a delivered task once (the body of the Celery task); returns what happened.

    ``secret`` is the one-time reference to the task's secret arguments, read only by the run
    that claimed the task.
    """
    _ensure_row(upid, operation, lock)
    if not state.claim_start(upid, worker):
        return _duplicate(upid)
    handle = TaskHandle.attach(upid)
    error: str | None = None
    try:
        if secret is not None:
            kwargs = {**kwargs, **task_secrets.take(upid, secret)}
        spec = get_operation(operation)
        if lock is not None:
            locks.acquire(locks.LockSpec.from_dict(lock), upid)
        spec.function(handle, **kwargs)
    except SoftTimeLimitExceeded:
        error = timed_out(time_limit)
    except SystemExit:  # SIGTERM (a stop request, a cold shutdown): billiard turns it into SystemExit
        state.finish(upid, INTERRUPTED)
        raise
    except Exception as exc:
        log.info("task %s failed", upid, exc_info=True)
        error = str(exc) or type(exc).__name__
    exitstatus = handle.exitstatus(error)
    _finish_surely(upid, exitstatus)
    return exitstatus


def _finish_surely(upid: str, exitstatus: str) -> None:
    """Finish even if the soft time limit strikes while finishing (then complete what was begun)."""
    for _attempt in range(3):
        try:
            if not state.finish(upid, exitstatus):
                state.complete(upid)
            return
        except SoftTimeLimitExceeded:
            continue


def _duplicate(upid: str) -> str:
    """A message for a task that was started before: never run it twice."""
    task = Task.objects.get(upid=upid)
    if task.status == Task.STOPPED:
        return "duplicate delivery: task already finished"
    if state.task_alive(task):
        return f"duplicate delivery: task running in process {task.pid}"
    end_dead(task)
    return "duplicate delivery: task process had died"


def end_dead(task: Task, exitstatus: str = WORKER_LOST) -> bool:
    """End a task whose responsible process is gone: as an error, or complete its finishing."""
    if task.status == Task.FINISHING:
        state.complete(task.upid)
        return True
    return state.finish(task.upid, exitstatus, from_status=(Task.RUNNING,))


def hard_timeout(upid: str, time_limit: int | None) -> None:
    """The worker's main process after a hard time limit killed the task's process."""
    state.finish(upid, timed_out(time_limit or 0))


def stop(upid: str) -> None:
    """Stop a task: drop it if queued, else SIGTERM its process (then SIGKILL after STOP_WAIT)."""
    from portal.celery import app

    task = Task.objects.get(upid=upid)
    if task.status == Task.STOPPED:
        return
    if task.status == Task.QUEUED and state.finish(upid, INTERRUPTED, from_status=(Task.QUEUED,)):
        app.control.revoke(upid)  # the worker drops the message (the row says stopped anyway)
        return
    if task.worker == OWN_PROCESS:
        _stop_own_process(task)
        return
    if not task.operation:
        raise TaskError("unable to stop the task: it runs inside the API server, not in a worker")
    destination = [task.worker] if task.worker else None
    app.control.revoke(upid, terminate=True, signal="SIGTERM", destination=destination)
    task = _wait_stopped_or_dead(upid, STOP_WAIT)
    if task.status != Task.STOPPED and state.task_alive(task):
        app.control.revoke(upid, terminate=True, signal="SIGKILL", destination=destination)
        task = _wait_stopped_or_dead(upid, STOP_WAIT)
    if task.status != Task.STOPPED and not state.task_alive(task):
        end_dead(task, INTERRUPTED)


def _stop_own_process(task: Task) -> None:
    """SIGTERM the command-line process that is the task, SIGKILL it after STOP_WAIT; end the row if it could not."""
    if task.node != settings.PVE_NODE_NAME:
        raise TaskError(f"unable to stop the task: it runs on node '{task.node}'")
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if task.status == Task.STOPPED or not state.task_alive(task):  # pid and start time: never a reused pid
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(task.pid, signum)  # type: ignore[arg-type]  # task_alive: a pid is set
        task = _wait_stopped_or_dead(task.upid, STOP_WAIT)
    if task.status != Task.STOPPED and not state.task_alive(task):
        end_dead(task, INTERRUPTED)


def _wait_stopped_or_dead(upid: str, timeout: float) -> Task:
    """The row once the task stopped or its process is gone, or when ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while True:
        task = Task.objects.get(upid=upid)
        if task.status == Task.STOPPED or not state.task_alive(task) or time.monotonic() > deadline:
            return task
        time.sleep(0.1)
