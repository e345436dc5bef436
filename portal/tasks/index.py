"""Tasks with UPIDs: a node-local index row plus a log file ending in ``TASK OK`` / ``TASK ERROR``.

Config-only operations run inline in the request (they are quick); long operations are
submitted to this node's Celery worker (``portal.tasks.runner``) and write through the same
handle there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

from django.conf import settings
from django.db import IntegrityError, connections, transaction

from portal.models import Task
from portal.tasks import state
from portal.tasks.logs import log_path
from portal.tasks.upid import UPID, process_start_ticks

INTERRUPTED = "received interrupt"  # the exit status of a stopped task, as Proxmox's
# Task.worker of a task that is a command-line process of its own (qm, vzdump, qmrestore): a stop
# request signals that process, as Proxmox kills a task's pid, instead of asking a Celery worker.
OWN_PROCESS = "own process"

# A UPID names its process and second: a second task of the same process, second, type, id and
# user gets the next free second rather than a duplicate id.
UPID_ATTEMPTS = 60


def create_task(type_: str, id_: str, user: str, *, status: str = Task.RUNNING, **fields: object) -> Task:
    """A new UPID of this node naming this process, with its index row and an empty log file."""
    pid, pstart = os.getpid(), process_start_ticks()
    starttime = int(time.time())
    for attempt in range(UPID_ATTEMPTS):
        upid = str(UPID(settings.PVE_NODE_NAME, pid, pstart, starttime + attempt, type_, id_, user))
        try:
            with transaction.atomic(using="default"):
                task = Task.objects.create(
                    upid=upid,
                    node=settings.PVE_NODE_NAME,
                    type=type_,
                    vmid=id_,
                    user=user,
                    starttime=starttime + attempt,
                    status=status,
                    pid=pid if status == Task.RUNNING else None,
                    pstart=pstart if status == Task.RUNNING else None,
                    **fields,
                )
        except IntegrityError:
            continue
        path = log_path(upid)
        for directory in (path.parent.parent, path.parent):  # task logs are for the node's user only
            directory.mkdir(exist_ok=True, mode=0o700)
        path.touch(mode=0o600)
        return task
    raise RuntimeError(f"no free UPID for {type_}:{id_}:{user} within {UPID_ATTEMPTS} s")


def error_status(error: str) -> str:
    """An error's exit status: its first line (Proxmox keeps one line), never empty."""
    first = error.strip().splitlines()[0].strip() if error.strip() else ""
    return first[:4000] or "unknown error"


class TaskHandle:
    """A running task: append log lines, then finish with OK, warnings or an error."""

    def __init__(self, type_: str, vmid: str, user: str) -> None:
        """A new task run by this process (inline, or in a thread of it)."""
        self._attach(create_task(type_, vmid, user).upid)

    @classmethod
    def attach(cls, upid: str) -> TaskHandle:
        """The handle of an existing task (a worker running a submitted one)."""
        handle = cls.__new__(cls)
        handle._attach(upid)
        return handle

    def _attach(self, upid: str) -> None:
        self.upid = upid
        self.path = log_path(upid)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.warnings = 0

    def log(self, line: str) -> None:
        with open(self.path, "a") as handle:
            handle.write(line.replace("\n", " ") + "\n")

    def warn(self, line: str) -> None:
        """A warning line; the task then ends with ``TASK WARNINGS: <n>`` instead of ``TASK OK``."""
        self.warnings += 1
        self.log(f"WARN: {line}")

    def exitstatus(self, error: str | None = None) -> str:
        if error is not None:
            return error_status(error)
        return f"WARNINGS: {self.warnings}" if self.warnings else "OK"

    def finish(self, error: str | None = None) -> None:
        state.finish(self.upid, self.exitstatus(error))


def _run(handle: TaskHandle, work: Callable[[TaskHandle], None]) -> None:
    try:
        work(handle)
    except Exception as exc:
        handle.finish(str(exc) or type(exc).__name__)
    else:
        handle.finish()


def run_inline(
    type_: str, vmid: str, user: str, work: Callable[[TaskHandle], None], *, background_after: float | None = None
) -> str:
    """Run ``work`` as a task now; failures end up in the task status, as in Proxmox.

    ``background_after``: the work runs in a thread of this process and the UPID is returned
    when it ends or after that many seconds, whichever comes first, so an API client is answered
    before its HTTP timeout (proxmoxer's is 5 s) while a long clone or restore goes on; it then
    follows the task through its UPID, as with any Proxmox worker task. None: run it here.
    """
    handle = TaskHandle(type_, vmid, user)
    if background_after is None:
        _run(handle, work)
        return handle.upid

    def body() -> None:
        try:
            _run(handle, work)
        finally:
            connections.close_all()  # this thread's own database connections

    thread = threading.Thread(target=body, name=f"task {type_} {vmid}")
    thread.start()
    thread.join(background_after)
    return handle.upid


def run_api_task(type_: str, vmid: str, user: str, work: Callable[[TaskHandle], None]) -> str:
    """``run_inline`` for an API request: answered within ``PVE_API_TASK_WAIT`` seconds."""
    return run_inline(type_, vmid, user, work, background_after=settings.PVE_API_TASK_WAIT)


def _interrupt(signum: int, frame: object) -> None:
    raise SystemExit(INTERRUPTED)


@contextlib.contextmanager
def own_process_task(type_: str, vmid: str, user: str) -> Iterator[TaskHandle]:
    """A task whose process is this command's (``task stop`` SIGTERMs it, as Proxmox kills a task's pid).

    SIGTERM raises SystemExit in the main thread, so the work's own cleanup runs as in a stopped
    worker task; the task then ends ``received interrupt``. An exception ends it with its message
    and propagates; a normal exit ends it OK (or with its warnings).
    """
    handle = TaskHandle.attach(create_task(type_, vmid, user, worker=OWN_PROCESS).upid)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield handle
    except SystemExit:
        state.finish(handle.upid, INTERRUPTED)
        raise
    except Exception as exc:
        handle.finish(str(exc) or type(exc).__name__)
        raise
    else:
        handle.finish()
    finally:
        signal.signal(signal.SIGTERM, previous)
