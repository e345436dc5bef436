"""Follow a task from a CLI: print its log as it grows, then return or raise by its exit status.

On a terminal a spinner line (type, id, elapsed time) sits below the log and is redrawn in
place; anywhere else only the log lines are written, so redirected output stays clean. A task
of this node is read from the task index and log file; a task of another node through the
reader the cluster app registers (that node's API, as ``root@pam`` with a ticket signed by the
cluster key).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TextIO

from django.conf import settings

from portal.models import Task
from portal.tasks.exceptions import TaskError, TaskFailed
from portal.tasks.logs import read_lines
from portal.tasks.state import FINAL_PREFIXES
from portal.tasks.upid import parse_upid

POLL_INTERVAL = 0.5
SPINNER = "|/-\\"
CLEAR_LINE = "\r\x1b[K"


class TaskSource(Protocol):
    def state(self) -> tuple[bool, str]:
        """``(stopped, exitstatus)``."""

    def lines(self, start: int) -> list[str]:
        """Log lines from ``start`` (0-based) on."""


class LocalSource:
    def __init__(self, upid: str) -> None:
        self.upid = upid

    def state(self) -> tuple[bool, str]:
        task = Task.objects.filter(upid=self.upid).first()
        if task is None:
            raise TaskError(f"no such task '{self.upid}'")
        return task.status == Task.STOPPED, task.exitstatus

    def lines(self, start: int) -> list[str]:
        return read_lines(self.upid)[start:]


RemoteSourceFactory = Callable[[str, str], TaskSource]
_remote_source: RemoteSourceFactory | None = None


def set_remote_source(factory: RemoteSourceFactory) -> None:
    """Called by the app that knows the other nodes (cluster): ``factory(node, upid)`` reads a task there."""
    global _remote_source
    _remote_source = factory


def task_source(node: str, upid: str) -> TaskSource:
    """This node's task index and log file, or the registered reader of another node's tasks."""
    if node == settings.PVE_NODE_NAME:
        return LocalSource(upid)
    if _remote_source is None:
        raise TaskError(f"unable to follow a task of node '{node}' from here")
    return _remote_source(node, upid)


def _elapsed(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def follow_task(
    upid: str, stdout: TextIO, *, node: str | None = None, poll: float = POLL_INTERVAL, timeout: float | None = None
) -> str:
    """Print the task's log until it ends; its exit status (``OK``, ``WARNINGS: n``) or TaskFailed."""
    parsed = parse_upid(upid)
    node = node or parsed.node
    source = task_source(node, upid)
    tty = bool(getattr(stdout, "isatty", lambda: False)())
    label = f"{parsed.type} {parsed.id}".strip()
    started = time.monotonic()
    printed, frame, spinning, ending = 0, 0, False, False
    while True:
        stopped, exitstatus = source.state()  # first the state, then the lines: a stopped task's log is complete
        lines = source.lines(printed)
        if lines and spinning:
            stdout.write(CLEAR_LINE)
            spinning = False
        for line in lines:
            stdout.write(line + "\n")
        printed += len(lines)
        ending = ending or bool(lines and lines[-1].startswith(FINAL_PREFIXES))  # the row follows in a moment
        if stopped:
            if spinning:
                stdout.write(CLEAR_LINE)
            stdout.flush()
            if exitstatus == "OK" or exitstatus.startswith("WARNINGS: "):
                return exitstatus
            raise TaskFailed(upid, exitstatus or "unknown error")
        elapsed = time.monotonic() - started
        if timeout is not None and elapsed > timeout:
            if spinning:
                stdout.write(CLEAR_LINE)
            raise TaskError(f"task {upid} still running after {timeout:.0f} s")
        if tty and not ending:
            stdout.write(f"{CLEAR_LINE}{SPINNER[frame % len(SPINNER)]} {label}: running {_elapsed(elapsed)}")
            frame += 1
            spinning = True
        stdout.flush()
        time.sleep(poll)
