"""Follow a task from a CLI: print its log as it grows, then return or raise by its exit status.

On a terminal a spinner line (type, id, elapsed time) sits below the log and is redrawn in
place; anywhere else only the log lines are written, so redirected output stays clean. A task
of this node is read from the task index and log file; a task of another node through that
node's API, as ``root@pam`` with a ticket signed by the cluster key.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol, TextIO
from urllib.parse import quote

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


class RemoteSource:
    """The task's node API (``/nodes/<node>/tasks/<upid>/...``), TLS verified as forwarding does."""

    def __init__(self, node: str, upid: str) -> None:
        from authz.models import User
        from authz.services import issue_ticket
        from cluster.node_routing import resolve

        target = resolve(node)
        if target is None:
            raise TaskError(f"node '{node}' is this node")
        self.target = target
        self.base = f"/api2/json/nodes/{node}/tasks/{quote(upid, safe='')}"
        ticket, _csrf = issue_ticket(User.objects.get(userid="root@pam"))
        self.headers = {"Cookie": f"PVEAuthCookie={quote(ticket, safe='')}"}

    def _get(self, path: str) -> Any:
        from portal.api.forwarding import ForwardError, send

        try:
            answer = send(self.target, "GET", self.base + path, self.headers)
        except ForwardError as exc:
            raise TaskError(f"{exc.status} {exc.message}") from None
        if answer.status != 200:
            raise TaskError(f"{answer.status} {answer.reason}")
        return json.loads(answer.body)

    def state(self) -> tuple[bool, str]:
        data = self._get("/status")["data"]
        return data.get("status") == "stopped", str(data.get("exitstatus", ""))

    def lines(self, start: int) -> list[str]:
        data = self._get(f"/log?start={start}&limit=0")["data"]
        return [str(entry.get("t", "")) for entry in data]


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
    source: TaskSource = LocalSource(upid) if node == settings.PVE_NODE_NAME else RemoteSource(node, upid)
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
