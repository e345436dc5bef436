"""Stopping a task that is a command-line process of its own (``qm migrate``, ``vzdump``, ``qmrestore``).

As Proxmox kills a task's pid: ``DELETE /nodes/{node}/tasks/{upid}`` SIGTERMs the process the
UPID names, whose cleanup runs (the ``finally`` of its work) before the task ends ``received
interrupt``; a process that ignores SIGTERM is killed after the grace time and its row ended
the same way. The processes are real ``manage.py shell`` children on the session's databases.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from portal.models import Task
from portal.tasks import index
from portal.tasks.logs import read_lines
from portal.tasks.state import task_alive
from tests.api_client import logged_in
from tests.harness import REPO

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json/nodes/testnode/tasks"

SCRIPT = """
import signal, sys, time
from pathlib import Path
from portal.tasks.index import own_process_task
with own_process_task("teststop", "", "root@pam") as task:
    if sys.argv[2] == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    task.log("working")
    try:
        time.sleep(120)
    finally:
        Path(sys.argv[1]).write_text("cleaned up")
"""


def start(node_env: dict[str, str], marker: Path, mode: str) -> tuple[subprocess.Popen, Task]:
    """The script as a child process, once its task runs (and has logged)."""
    code = f"import sys; sys.argv = ['x', {str(marker)!r}, {mode!r}]\n{SCRIPT}"
    process = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "shell", "-c", code],
        env=node_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        task = Task.objects.filter(type="teststop", pid=process.pid).first()
        if task is not None and read_lines(task.upid)[-1:] == ["working"]:
            return process, task
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.1)


def test_a_stop_request_signals_the_process_and_its_cleanup_runs(node_env, tmp_path):
    marker = tmp_path / "cleanup"
    process, task = start(node_env, marker, "handle")
    assert task.worker == index.OWN_PROCESS and task.status == Task.RUNNING and task_alive(task)
    assert logged_in().delete(f"{API}/{task.upid}").status_code == 200
    process.communicate(timeout=30)
    assert process.returncode != 0
    assert marker.read_text() == "cleaned up"
    task.refresh_from_db()
    assert (task.status, task.exitstatus) == (Task.STOPPED, "received interrupt")
    assert read_lines(task.upid)[-1] == "TASK ERROR: received interrupt"


def test_a_process_ignoring_sigterm_is_killed_and_its_task_ended(node_env, tmp_path):
    marker = tmp_path / "cleanup"
    process, task = start(node_env, marker, "ignore")
    assert logged_in().delete(f"{API}/{task.upid}").status_code == 200
    assert process.wait(timeout=30) == -9  # SIGKILL after the grace time
    assert not marker.exists()  # killed: nothing of it ran
    task.refresh_from_db()
    assert (task.status, task.exitstatus) == (Task.STOPPED, "received interrupt")


def test_a_stopped_process_task_is_left_alone(node_env, tmp_path):
    """Stopping a task that already ended changes nothing (and signals no reused pid)."""
    process, task = start(node_env, tmp_path / "cleanup", "handle")
    process.terminate()
    process.communicate(timeout=30)
    task.refresh_from_db()
    assert task.status == Task.STOPPED and task.exitstatus == "received interrupt"
    ended = task.endtime
    assert logged_in().delete(f"{API}/{task.upid}").status_code == 200
    task.refresh_from_db()
    assert task.endtime == ended and task.exitstatus == "received interrupt"
