"""Snapshots of a running VM of node 2, asked through node 1 and node 3 (the lab of test_qemu_lab).

With and without RAM, listed, rolled back (to the RAM state: a new QEMU on node 2 started from it),
deleted, and the VM destroyed; every QEMU is killed at the end whatever happened.
Run under the lab lock: ``flock /tmp/pve-lab.lock .venv/bin/pytest tests/vms/test_snapshot_lab.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from cluster.lab import netns
from tests.cluster.lifecycle import api, login
from tests.vms.test_qemu_lab import PASSWORD, lab, node_storage_root, qemu_pid, task_status  # noqa: F401

pytestmark = pytest.mark.slow
VMID = 9160


def test_snapshot_with_and_without_ram_and_rollback_through_other_nodes(lab):  # noqa: F811
    node1, node2, node3 = lab.nodes
    auth1, auth3 = login(lab, node1, PASSWORD), login(lab, node3, PASSWORD)
    base = f"/nodes/node2/qemu/{VMID}"

    def ok(node, auth, method: str, path: str, data: dict | None = None) -> dict:  # type: ignore[no-untyped-def]
        status, body = api(lab, node, method, path, data, auth)
        assert status == 200, body
        if isinstance(body["data"], str) and body["data"].startswith("UPID:"):
            assert body["data"].startswith("UPID:node2:"), body  # run where the VM lives
            state = task_status(lab, node, auth, body["data"])
            assert state["exitstatus"] == "OK", state
        return body

    config = {"vmid": VMID, "memory": 64, "name": "snaplab", "scsi0": "local:0.01,format=qcow2"}
    ok(node1, auth1, "POST", "/nodes/node2/qemu", config)
    try:
        ok(node1, auth1, "POST", f"{base}/status/start")
        first_pid = qemu_pid(node2, VMID)
        assert first_pid is not None
        ok(node1, auth1, "POST", f"{base}/snapshot", {"snapname": "ram", "vmstate": 1})
        ok(node3, auth3, "POST", f"{base}/snapshot", {"snapname": "disks", "description": "no RAM"})
        assert qemu_pid(node2, VMID) == first_pid  # both taken of the running QEMU
        state = node_storage_root(node2) / "images" / str(VMID) / f"vm-{VMID}-state-ram.raw"
        assert state.read_bytes()[:4] == b"QEVM"
        listed = {item["name"]: item for item in ok(node3, auth3, "GET", f"{base}/snapshot")["data"]}
        assert set(listed) == {"ram", "disks", "current"}
        assert (listed["ram"]["vmstate"], listed["disks"]["vmstate"], listed["current"]["parent"]) == (1, 0, "disks")

        ok(node1, auth1, "POST", f"{base}/snapshot/ram/rollback")
        pid = qemu_pid(node2, VMID)
        assert pid not in (None, first_pid) and pid in netns.pids(node2.namespace)
        current = ok(node3, auth3, "GET", f"{base}/status/current")["data"]
        assert current["status"] == "running" and "lock" not in current
        assert ok(node1, auth1, "GET", f"{base}/config")["data"]["parent"] == "ram"

        ok(node3, auth3, "DELETE", f"{base}/snapshot/disks")
        ok(node1, auth1, "DELETE", f"{base}/snapshot/ram")
        assert not state.exists()
        assert [item["name"] for item in ok(node1, auth1, "GET", f"{base}/snapshot")["data"]] == ["current"]
        ok(node1, auth1, "POST", f"{base}/status/stop")
        ok(node1, auth1, "DELETE", base)
    finally:
        pid = qemu_pid(node2, VMID)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
