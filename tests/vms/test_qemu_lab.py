"""A VM of node 2 started and stopped through node 1's API: forwarded, run by node 2's worker, on node 2.

Three lab nodes (whole node runners: replicator, worker, web, qmeventd) in network namespaces.
Run under the lab lock: ``flock /tmp/pve-lab.lock .venv/bin/pytest tests/vms/test_qemu_lab.py``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
from pathlib import Path

import pytest

from cluster.lab import netns, services
from cluster.lab.cluster import LabCluster
from tests.cluster.lifecycle import api, login, manage, web_answers
from tests.cluster.replication import wait_for

pytestmark = pytest.mark.slow
PASSWORD = "qemu-lab-root-pw"
VMID = 9100


def _web_on_node_addresses(cluster: LabCluster) -> None:
    for node in cluster.nodes:
        node.env.update(services.web_environment(node.address))


@pytest.fixture(scope="module")
def lab(lab_cluster):
    cluster = lab_cluster(
        3, name="qemu", root_password=PASSWORD, prepare=_web_on_node_addresses, kind="node", timeout=180
    )
    for node in cluster.nodes:
        wait_for(lambda node=node: web_answers(cluster, node), 180, interval=1, what=f"{node.name}'s web server")
    return cluster


def run_dir(node) -> Path:  # type: ignore[no-untyped-def]
    return Path(node.env.get("PVE_RUN_DIR") or Path(node.env["PVE_DATA_DIR"]) / "run") / "qemu-server"


def qemu_pid(node, vmid: int = VMID) -> int | None:  # type: ignore[no-untyped-def]
    """The pid of VM ``vmid``'s QEMU on ``node``: its pid file names a process started with that pid file."""
    pidfile = run_dir(node) / f"{vmid}.pid"
    try:
        pid = int(pidfile.read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if str(pidfile).encode() in argv else None


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


def task_status(lab, via, auth, upid: str) -> dict:  # type: ignore[no-untyped-def]
    """The final status of task ``upid`` (of any node), asked through node ``via``."""
    owner = upid.split(":")[1]
    answer: dict = {}

    def stopped() -> bool:
        answer.update(api(lab, via, "GET", f"/nodes/{owner}/tasks/{upid}/status", auth=auth)[1]["data"])
        return answer["status"] == "stopped"

    wait_for(stopped, 120, interval=0.5, what=f"task {upid}")
    return answer


def vm_nodes(lab, via, auth, vmid: int) -> list[str]:  # type: ignore[no-untyped-def]
    """The nodes ``/cluster/resources`` places VM ``vmid`` on, as node ``via`` sees them."""
    status, body = api(lab, via, "GET", "/cluster/resources?type=vm", auth=auth)
    assert status == 200, body
    return [item["node"] for item in body["data"] if item.get("vmid") == vmid]


def config_files(lab, vmid: int) -> dict[str, list[str]]:
    """For each node's mirror of the cluster configuration: the nodes whose directory holds ``<vmid>.conf``."""
    return {
        node.name: sorted(
            path.parent.parent.name
            for path in (node.directory / "etc" / "pve" / "nodes").glob(f"*/qemu-server/{vmid}.conf")
        )
        for node in lab.nodes
    }


def test_concurrent_creates_of_one_vmid_on_two_nodes_exactly_one_wins(lab):
    node1, node2, node3 = lab.nodes
    auth1, auth2 = login(lab, node1, PASSWORD), login(lab, node2, PASSWORD)
    vmid = 9150
    answers: dict[str, tuple[int, dict]] = {}

    def create(node, auth) -> None:  # type: ignore[no-untyped-def]
        answers[node.name] = api(lab, node, "POST", f"/nodes/{node.name}/qemu", {"vmid": vmid, "memory": 64}, auth)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda args: create(*args), [(node1, auth1), (node2, auth2)]))
    try:
        outcomes = {}
        for name, (status, body) in answers.items():
            if status == 200:
                upid = body["data"]
                outcomes[name] = task_status(lab, node3, login(lab, node3, PASSWORD), upid)["exitstatus"]
            else:
                outcomes[name] = f"HTTP {status}"
        winners = [name for name, outcome in outcomes.items() if outcome == "OK"]
        assert len(winners) == 1, outcomes
        loser = ({"node1", "node2"} - set(winners)).pop()
        assert "already exists" in outcomes[loser] or outcomes[loser].startswith("HTTP"), outcomes

        auth3 = login(lab, node3, PASSWORD)
        wait_for(lambda: vm_nodes(lab, node3, auth3, vmid) == winners, 30, what="one VM in /cluster/resources")
        wait_for(
            lambda: config_files(lab, vmid) == {node.name: winners for node in lab.nodes},
            30,
            what="one config file in every node's mirror",
        )
    finally:
        for name in answers:
            node = lab.node(name)
            api(lab, node, "DELETE", f"/nodes/{name}/qemu/{vmid}", auth=login(lab, node, PASSWORD))


def test_a_qemu_killed_from_outside_is_noticed_and_cleaned_up(lab):
    node1, node2, _node3 = lab.nodes
    auth = login(lab, node1, PASSWORD)
    vmid = 9151
    status, body = api(lab, node1, "POST", "/nodes/node2/qemu", {"vmid": vmid, "memory": 64, "name": "victim"}, auth)
    assert status == 200 and task_status(lab, node1, auth, body["data"])["exitstatus"] == "OK", body
    try:
        status, body = api(lab, node1, "POST", f"/nodes/node2/qemu/{vmid}/status/start", {}, auth)
        assert status == 200 and task_status(lab, node1, auth, body["data"])["exitstatus"] == "OK", body
        pid = qemu_pid(node2, vmid)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        def noticed() -> bool:
            state = api(lab, node1, "GET", f"/nodes/node2/qemu/{vmid}/status/current", auth=auth)[1]["data"]
            return state["status"] == "stopped" and not (run_dir(node2) / f"{vmid}.pid").exists()

        wait_for(noticed, 60, interval=0.5, what="the killed QEMU noticed")
        assert not (run_dir(node2) / f"{vmid}.qmp").exists()
        entries = manage(
            lab,
            node1,
            "shell",
            "-c",
            "from cluster.models import ClusterLogEntry as E;"
            f"print(*('ENTRY-' + n for n in E.objects.filter(msg__startswith='VM {vmid} stopped').values_list('node', flat=True)))",
        )
        assert entries.returncode == 0, entries.stderr
        written = [word for word in entries.stdout.split() if word.startswith("ENTRY-")]
        assert written == ["ENTRY-node2"], entries.stdout  # one entry, written by the VM's node, replicated

        status, body = api(lab, node1, "POST", f"/nodes/node2/qemu/{vmid}/status/start", {}, auth)
        assert status == 200 and task_status(lab, node1, auth, body["data"])["exitstatus"] == "OK", body
        assert qemu_pid(node2, vmid) not in (None, pid)  # it starts again after the cleanup
    finally:
        kill_qemu(node2, vmid)
        api(lab, node1, "DELETE", f"/nodes/node2/qemu/{vmid}", auth=auth)


def test_destroy_with_purge_through_another_node_removes_disks_acl_and_pool_membership(lab):
    node1, node2, node3 = lab.nodes
    auth = login(lab, node3, PASSWORD)
    vmid = 9152
    for kind in ("pool", "group"):  # (grants of root@pam are not written to user.cfg)
        added = manage(lab, node3, "pveum", kind, "add", "labpurge")
        assert added.returncode == 0, added.stderr
    status, body = api(
        lab,
        node3,
        "POST",
        "/nodes/node2/qemu",
        {"vmid": vmid, "memory": 64, "scsi0": "local:1", "pool": "labpurge"},
        auth,
    )
    assert status == 200 and task_status(lab, node3, auth, body["data"])["exitstatus"] == "OK", body
    images = node_storage_root(node2) / "images" / str(vmid)
    assert [path.name.partition(".")[0] for path in images.iterdir()] == [f"vm-{vmid}-disk-0"]
    status, body = api(
        lab, node3, "PUT", "/access/acl", {"path": f"/vms/{vmid}", "roles": "PVEVMUser", "groups": "labpurge"}, auth
    )
    assert status == 200, body
    user_cfg = node1.directory / "etc" / "pve" / "user.cfg"
    wait_for(lambda: f"/vms/{vmid}:@labpurge:" in user_cfg.read_text(), 30, what="the ACL replicated")
    wait_for(lambda: _pool_vms(user_cfg) == [str(vmid)], 30, what="the pool membership replicated")

    status, body = api(
        lab, node3, "DELETE", f"/nodes/node2/qemu/{vmid}?purge=1&destroy-unreferenced-disks=1", auth=auth
    )
    assert status == 200 and body["data"].startswith("UPID:node2:"), body
    assert task_status(lab, node3, auth, body["data"])["exitstatus"] == "OK"
    assert not any(images.glob("*")), list(images.glob("*"))
    for node in lab.nodes:
        cfg = node.directory / "etc" / "pve" / "user.cfg"
        wait_for(lambda cfg=cfg: f"/vms/{vmid}:" not in cfg.read_text(), 30, what=f"ACL gone on {node.name}")
        assert _pool_vms(cfg) == []
    assert config_files(lab, vmid) == {node.name: [] for node in lab.nodes}
    assert manage(lab, node3, "pveum", "pool", "delete", "labpurge").returncode == 0
    assert manage(lab, node3, "pveum", "group", "delete", "labpurge").returncode == 0


def _pool_vms(user_cfg: Path) -> list[str]:
    """The VMIDs user.cfg's ``pool:labpurge:<comment>:<vmids>:<storages>`` line lists."""
    line = next(line for line in user_cfg.read_text().splitlines() if line.startswith("pool:labpurge:"))
    return [vmid for vmid in line.split(":")[3].split(",") if vmid]


def node_storage_root(node) -> Path:  # type: ignore[no-untyped-def]
    """The path of storage ``local`` on a lab node (its storage.cfg ``dir`` line for ``local``)."""
    text = (node.directory / "etc" / "pve" / "storage.cfg").read_text()
    section = text.split("dir: local\n", 1)[1].split("\n\n", 1)[0]
    path = next(line.split(None, 1)[1] for line in section.splitlines() if line.strip().startswith("path "))
    return Path(path.strip())


def kill_qemu(node, vmid: int) -> None:  # type: ignore[no-untyped-def]
    pid = qemu_pid(node, vmid)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def block_of(node, vmid: int, drive: str) -> dict:  # type: ignore[no-untyped-def]
    """QEMU's ``query-block`` entry of ``drive`` of VM ``vmid`` running on ``node`` (over its QMP socket)."""
    from vms.qemu.qmp import _run

    entries = _run(run_dir(node) / f"{vmid}.qmp", "query-block", None, 10)
    return next(entry for entry in entries if entry["device"] == drive)


def test_resize_online_and_move_disk_online_between_dir_and_btrfs(lab, btrfs_mount):
    node1, node2, _node3 = lab.nodes
    auth = login(lab, node1, PASSWORD)
    vmid = 9160
    storage = {"storage": "labbtrfs", "type": "btrfs", "path": str(btrfs_mount), "content": "images", "nodes": "node2"}
    assert api(lab, node1, "POST", "/storage", storage, auth)[0] == 200
    config = {"vmid": vmid, "memory": 64, "scsi0": "local:0.01,format=qcow2"}
    status, body = api(lab, node1, "POST", "/nodes/node2/qemu", config, auth)
    assert status == 200 and task_status(lab, node1, auth, body["data"])["exitstatus"] == "OK", body
    vm_url = f"/nodes/node2/qemu/{vmid}"
    try:
        status, body = api(lab, node1, "POST", f"{vm_url}/status/start", {}, auth)
        assert status == 200 and task_status(lab, node1, auth, body["data"])["exitstatus"] == "OK", body
        size = block_of(node2, vmid, "drive-scsi0")["inserted"]["image"]["virtual-size"]

        status, body = api(lab, node1, "PUT", f"{vm_url}/resize", {"disk": "scsi0", "size": "+1M"}, auth)
        assert status == 200 and body["data"].startswith("UPID:node2:") and ":resize:" in body["data"], body
        assert task_status(lab, node1, auth, body["data"])["exitstatus"] == "OK"
        grown = size + 1024 * 1024 + (-(size + 1024 * 1024) % 1024)
        assert block_of(node2, vmid, "drive-scsi0")["inserted"]["image"]["virtual-size"] == grown

        status, body = api(lab, node1, "POST", f"{vm_url}/move_disk", {"disk": "scsi0", "storage": "labbtrfs"}, auth)
        assert status == 200 and ":qmmove:" in body["data"], body
        assert task_status(lab, node1, auth, body["data"])["exitstatus"] == "OK"
        inserted = block_of(node2, vmid, "drive-scsi0")["inserted"]
        assert inserted["file"] == f"{btrfs_mount}/images/{vmid}/vm-{vmid}-disk-0/disk.raw"
        assert inserted["image"]["virtual-size"] == grown
        current = api(lab, node1, "GET", f"{vm_url}/config", auth=auth)[1]["data"]
        assert current["scsi0"].startswith(f"labbtrfs:{vmid}/vm-{vmid}-disk-0.raw,")
        assert current["unused0"] == f"local:{vmid}/vm-{vmid}-disk-0.qcow2" and "lock" not in current

        back = {"disk": "scsi0", "storage": "local", "format": "qcow2", "delete": 1}
        status, body = api(lab, node1, "POST", f"{vm_url}/move-disk", back, auth)
        assert status == 200 and task_status(lab, node1, auth, body["data"])["exitstatus"] == "OK", body
        inserted = block_of(node2, vmid, "drive-scsi0")["inserted"]
        assert inserted["file"] == str(node_storage_root(node2) / "images" / str(vmid) / f"vm-{vmid}-disk-1.qcow2")
        current = api(lab, node1, "GET", f"{vm_url}/config", auth=auth)[1]["data"]
        assert current["scsi0"].startswith(f"local:{vmid}/vm-{vmid}-disk-1.qcow2,") and "unused1" not in current
        assert not (btrfs_mount / "images" / str(vmid)).exists()  # the btrfs volume freed with delete
    finally:
        kill_qemu(node2, vmid)
        api(lab, node1, "DELETE", f"{vm_url}?purge=1&destroy-unreferenced-disks=1", auth=auth)
        api(lab, node1, "DELETE", "/storage/labbtrfs", auth=auth)
