"""Task row transitions shared by the runner, the reconciler and the stop endpoint.

Every transition is one conditional UPDATE on the node-local row, so concurrent parties (a
redelivered message, the worker's main process after a hard time limit, the dying child, the
reconciler) agree on who does what: exactly one starts a queued task, exactly one finishes it.
Finishing releases the task's lease and writes the final log line *before* the row says
``stopped``, so a client that sees ``stopped`` finds the object unlocked and the log complete.
"""

from __future__ import annotations

import logging
import os
import time

from portal.models import Task
from portal.tasks import locks, task_secrets
from portal.tasks.logs import log_path, read_lines
from portal.tasks.upid import process_start_ticks

log = logging.getLogger(__name__)

FINAL_PREFIXES = ("TASK OK", "TASK ERROR:", "TASK WARNINGS:")


def process_identity() -> tuple[int, int]:
    """``(pid, pstart)`` of this process, as a UPID names a process."""
    return os.getpid(), process_start_ticks()


def process_alive(pid: int | None, pstart: int | None) -> bool:
    """Proxmox's test: ``/proc/<pid>`` exists, is not a zombie and started at ``pstart``."""
    if not pid or pstart is None:
        return False
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and int(fields[19]) == pstart


def task_alive(task: Task) -> bool:
    """Whether the process responsible for ``task`` still runs."""
    return process_alive(task.pid, task.pstart)


def claim_start(upid: str, worker: str) -> bool:
    """queued -> running for this process; False if someone else started (or stopped) it."""
    pid, pstart = process_identity()
    claimed = Task.objects.filter(upid=upid, status=Task.QUEUED).update(
        status=Task.RUNNING, pid=pid, pstart=pstart, worker=worker
    )
    return claimed == 1


def final_line(exitstatus: str) -> str:
    if exitstatus == "OK":
        return "TASK OK"
    if exitstatus.startswith("WARNINGS: "):
        return f"TASK {exitstatus}"
    return f"TASK ERROR: {exitstatus}"


def begin_finish(upid: str, exitstatus: str, *, from_status: tuple[str, ...] = Task.ACTIVE) -> bool:
    """Claim the finishing of a task (this process becomes responsible); False if another did."""
    pid, pstart = process_identity()
    claimed = Task.objects.filter(upid=upid, status__in=from_status).update(
        status=Task.FINISHING, exitstatus=exitstatus, pid=pid, pstart=pstart
    )
    return claimed == 1


def complete(upid: str) -> None:
    """Release the lease, end the log with the final line, mark the row stopped (idempotent)."""
    task_secrets.discard(upid)  # a task that ends without running leaves no password behind
    task = Task.objects.filter(upid=upid).first()
    if task is None or task.status != Task.FINISHING:
        return
    notes: list[str] = []
    if task.lock:
        try:
            locks.release(locks.LockSpec.from_dict(task.lock), upid)
        except Exception as exc:  # not quorate, say: the reconciler releases it later
            log.warning("task %s: releasing its lock failed: %s", upid, exc)
            notes.append(f"WARN: releasing the lock failed ({exc}); it is released once the cluster allows it")
    lines = read_lines(upid)
    if not lines or not lines[-1].startswith(FINAL_PREFIXES):
        path = log_path(upid)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.writelines(note + "\n" for note in notes)
            handle.write(final_line(task.exitstatus or "unknown error") + "\n")
    Task.objects.filter(upid=upid, status=Task.FINISHING).update(status=Task.STOPPED, endtime=int(time.time()))


def finish(upid: str, exitstatus: str, *, from_status: tuple[str, ...] = Task.ACTIVE) -> bool:
    """Finish a task with ``exitstatus`` unless another party already does; whether this one did."""
    if not begin_finish(upid, exitstatus, from_status=from_status):
        return False
    complete(upid)
    return True
