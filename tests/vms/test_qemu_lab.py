"""A VM of node 2 started and stopped through node 1's API: forwarded, run by node 2's worker, on node 2.

Three lab nodes (whole node runners: replicator, worker, web, qmeventd) in network namespaces.
Run under the lab lock: ``flock /tmp/pve-lab.lock .venv/bin/pytest tests/vms/test_qemu_lab.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from cluster.lab import netns, services
from cluster.lab.cluster import LabCluster
from tests.cluster.lifecycle import api, login
from tests.cluster.replication import wait_for

pytestmark = pytest.mark.slow
PASSWORD = "qemu-lab-root-pw"
VMID = 9100


def _web_on_node_addresses(cluster: LabCluster) -> None:
    for node in cluster.nodes:
        node.env.update(services.web_environment(node.address))


@pytest.fixture(scope="module")
def lab(lab_cluster):
    return lab_cluster(3, name="qemu", root_password=PASSWORD, prepare=_web_on_node_addresses, kind="node", timeout=180)


def run_dir(node) -> Path:  # type: ignore[no-untyped-def]
    return Path(node.env.get("PVE_RUN_DIR") or Path(node.env["PVE_DATA_DIR"]) / "run") / "qemu-server"


def qemu_pid(node) -> int | None:  # type: ignore[no-untyped-def]
    """The pid of VM ``VMID``'s QEMU on ``node``: its pid file names a process started with that pid file."""
    pidfile = run_dir(node) / f"{VMID}.pid"
    try:
        pid = int(pidfile.read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if str(pidfile).encode() in argv else None


def web_answers(lab, node) -> bool:  # type: ignore[no-untyped-def]
    """The node's API answers over TLS (401 without a ticket), asked from inside its namespace."""
    try:
        return api(lab, node, "GET", "/version")[0] == 401
    except AssertionError:  # nothing listens yet
        return False


def finished(lab, node, auth, upid: str) -> dict:  # type: ignore[no-untyped-def]
    path = f"/nodes/node2/tasks/{upid}/status"
    answer: dict = {}

    def stopped() -> bool:
        answer.update(api(lab, node, "GET", path, auth=auth)[1]["data"])
        return answer["status"] == "stopped"

    wait_for(stopped, 120, interval=0.5, what=f"task {upid}")
    return answer


def test_a_vm_of_node2_is_started_through_node1_and_runs_on_node2(lab):
    node1, node2, node3 = lab.nodes
    for node in lab.nodes:
        wait_for(lambda node=node: web_answers(lab, node), 180, interval=1, what=f"{node.name}'s web server")
    auth = login(lab, node1, PASSWORD)
    status, body = api(lab, node1, "POST", "/nodes/node2/qemu", {"vmid": VMID, "memory": 128, "name": "fwd"}, auth)
    assert status == 200 and body["data"].startswith("UPID:node2:"), body
    try:
        status, body = api(lab, node1, "POST", f"/nodes/node2/qemu/{VMID}/status/start", {}, auth)
        assert status == 200, body
        upid = body["data"]
        assert upid.startswith("UPID:node2:") and f":qmstart:{VMID}:root@pam:" in upid
        assert finished(lab, node1, auth, upid)["exitstatus"] == "OK"
        pid = qemu_pid(node2)
        assert pid is not None, "no QEMU of the VM on node2"
        assert pid in netns.pids(node2.namespace)  # it runs in node2's namespace, under node2's worker
        assert qemu_pid(node1) is None and qemu_pid(node3) is None

        status, body = api(lab, node3, "POST", f"/nodes/node2/qemu/{VMID}/status/stop", {}, login(lab, node3, PASSWORD))
        assert status == 200 and body["data"].startswith("UPID:node2:"), body
        assert finished(lab, node1, auth, body["data"])["exitstatus"] == "OK"
        assert qemu_pid(node2) is None and (not Path(f"/proc/{pid}").exists() or _zombie(pid))
    finally:
        pid = qemu_pid(node2)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
