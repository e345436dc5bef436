"""``follow_task``: a CLI prints a task's log as it grows and ends by its exit status.

The tasks here run in a thread of the test process (as ``run_background`` runs them in the web
server), so the log really grows while it is followed. Following a task of another node over
HTTPS is tested with two real nodes in ``test_forwarding``.
"""

from __future__ import annotations

import re
import threading
import time
from io import StringIO

import pytest
from django.db import connections

from portal.tasks.exceptions import TaskError, TaskFailed
from portal.tasks.follow import CLEAR_LINE, follow_task
from portal.tasks.index import TaskHandle


class Terminal(StringIO):
    def isatty(self) -> bool:
        return True


def start(
    lines: list[str], *, error: str | None = None, warn: bool = False, pause: float = 0.15
) -> tuple[str, threading.Thread]:
    """A task logging ``lines`` a little apart, then finishing; its UPID and thread."""
    handle = TaskHandle("testfollow", "1", "root@pam")

    def work() -> None:
        try:
            for line in lines:
                time.sleep(pause)
                handle.log(line)
            if warn:
                handle.warn("careful")
            time.sleep(pause)
            handle.finish(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=work)
    thread.start()
    return handle.upid, thread


def test_plain_output_is_the_log_and_ok_is_returned():
    upid, thread = start(["step 1", "step 2", "step 3"])
    out = StringIO()
    assert follow_task(upid, out, poll=0.05) == "OK"
    thread.join()
    assert out.getvalue() == "step 1\nstep 2\nstep 3\nTASK OK\n"


def test_an_error_raises_with_the_exit_status():
    upid, thread = start(["trying"], error="disk full\ndetails")
    out = StringIO()
    with pytest.raises(TaskFailed) as failed:
        follow_task(upid, out, poll=0.05)
    thread.join()
    assert failed.value.exitstatus == "disk full" and failed.value.upid == upid
    assert out.getvalue() == "trying\nTASK ERROR: disk full\n"


def test_warnings_are_returned_not_raised():
    upid, thread = start([], warn=True)
    out = StringIO()
    assert follow_task(upid, out, poll=0.05) == "WARNINGS: 1"
    thread.join()
    assert out.getvalue() == "WARN: careful\nTASK WARNINGS: 1\n"


def test_a_terminal_gets_a_spinner_line_that_is_cleared_for_log_lines():
    upid, thread = start(["first", "second"], pause=0.4)
    out = Terminal()
    assert follow_task(upid, out, poll=0.05) == "OK"
    thread.join()
    text = out.getvalue()
    assert "| testfollow 1: running 00:00" in text and "/ testfollow 1: running 00:00" in text
    # Without the spinner frames and the clearing before log lines, what remains is exactly the log.
    frames = re.compile(re.escape(CLEAR_LINE) + r"([|/\\-] testfollow 1: running \d\d:\d\d)?")
    assert frames.sub("", text) == "first\nsecond\nTASK OK\n"
    assert text.endswith("TASK OK\n")


def test_a_task_that_does_not_end_in_time_is_reported():
    handle = TaskHandle("testfollow", "2", "root@pam")
    with pytest.raises(TaskError, match="still running after"):
        follow_task(handle.upid, StringIO(), poll=0.05, timeout=0.3)
    handle.finish()
