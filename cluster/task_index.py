"""Tasks with UPIDs: a node-local index row plus a log file ending in ``TASK OK`` / ``TASK ERROR``.

Config-only operations run inline in the request (they are quick); long operations run the
same handle from a Celery worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from cluster.models import Task
from cluster.upid import UPID, parse_upid, process_start_ticks


def log_path(upid: str) -> Path:
    """``<data>/tasks/<last hex digit of starttime>/<UPID>`` as Proxmox lays them out."""
    parsed = parse_upid(upid)
    return Path(settings.PVE_DATA_DIR) / "tasks" / f"{parsed.starttime & 0xF:X}" / upid


class TaskHandle:
    """A running task: append log lines, then finish with OK or an error."""

    def __init__(self, type_: str, vmid: str, user: str) -> None:
        self.upid = str(
            UPID(
                node=settings.PVE_NODE_NAME,
                pid=os.getpid(),
                pstart=process_start_ticks(),
                starttime=int(time.time()),
                type=type_,
                id=vmid,
                user=user,
            )
        )
        self.path = log_path(self.upid)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self.task = Task.objects.create(
            upid=self.upid, node=settings.PVE_NODE_NAME, type=type_, vmid=vmid, user=user, starttime=int(time.time())
        )

    def log(self, line: str) -> None:
        with open(self.path, "a") as handle:
            handle.write(line.replace("\n", " ") + "\n")

    def finish(self, error: str | None = None) -> None:
        exitstatus = "OK" if error is None else error.splitlines()[0] if error.strip() else "unknown error"
        self.log("TASK OK" if error is None else f"TASK ERROR: {exitstatus}")
        self.task.status = "stopped"
        self.task.exitstatus = exitstatus
        self.task.endtime = int(time.time())
        self.task.save(update_fields=["status", "exitstatus", "endtime"])


def run_inline(type_: str, vmid: str, user: str, work: Callable[[TaskHandle], None]) -> str:
    """Run ``work`` as a task now; failures end up in the task status, as in Proxmox."""
    handle = TaskHandle(type_, vmid, user)
    try:
        work(handle)
    except Exception as exc:
        handle.finish(str(exc) or type(exc).__name__)
    else:
        handle.finish()
    return handle.upid


def read_log(upid: str, start: int = 0, limit: int = 50) -> tuple[list[dict[str, object]], int]:
    """Lines ``[start, start+limit)`` as ``{n, t}`` (1-based) and the total line count."""
    try:
        lines = log_path(upid).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        lines = []
    chosen = lines[start : start + limit] if limit > 0 else lines[start:]
    return [{"n": start + i + 1, "t": text} for i, text in enumerate(chosen)], len(lines)
