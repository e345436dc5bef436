"""Live status across a 3-node lab cluster: a QEMU running on node2 is ``running`` in node1's
``/cluster/resources``, status/current and rrddata of other nodes are forwarded, every node
has its ``vmbr0``. Whole node runners (so each node's pvestatd runs as in production)."""

from __future__ import annotations

import time

import pytest
import requests

from cluster.lab import services
from cluster.lab.cluster import LabCluster
from tests.vms.firmware_qemu import FirmwareQemu

PASSWORD = "status-lab-password"
VMID, STOPPED_VMID = 9301, 9302


def _up(cluster: LabCluster) -> None:
    cluster.up()
    cluster.connect_host()


def _prepare(cluster: LabCluster) -> None:
    for node in cluster.nodes:
        node.env.update(services.web_environment(node.address))
        (node.directory / "vz").mkdir(parents=True, exist_ok=True)


class Portal:
    def __init__(self, cluster: LabCluster, index: int) -> None:
        node = cluster.nodes[index]
        self.base = f"https://{node.address}:8006/api2/json"
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = str(services.ca_path(node.directory))
        data = self.session.post(f"{self.base}/access/ticket", {"username": "root@pam", "password": PASSWORD})
        data.raise_for_status()
        self.session.cookies.set("PVEAuthCookie", data.json()["data"]["ticket"])
        self.session.headers["CSRFPreventionToken"] = data.json()["data"]["CSRFPreventionToken"]

    def get(self, path: str, **query) -> tuple[int, object]:
        response = self.session.get(f"{self.base}{path}", params=query, timeout=30)
        return response.status_code, response.json().get("data")

    def post(self, path: str, **data) -> tuple[int, object]:
        response = self.session.post(f"{self.base}{path}", data=data, timeout=30)
        return response.status_code, response.json().get("data")


@pytest.fixture(scope="module")
def lab(lab_cluster, tmp_path_factory):
    cluster = lab_cluster(
        3,
        name="status",
        root_password=PASSWORD,
        env={"PVE_STATUS_INTERVAL": "1"},
        up=_up,
        prepare=_prepare,
        kind="node",
        timeout=180,
    )
    for node in cluster.nodes:
        services.wait_web(services.portal_url(node.address) + "admin/login/", services.ca_path(node.directory), None)
    node1 = Portal(cluster, 0)
    for vmid, node in ((VMID, "node2"), (STOPPED_VMID, "node3")):
        code, answer = node1.post(f"/nodes/{node}/qemu", vmid=vmid, name=f"lab{vmid}", memory=64)
        assert code == 200, answer
    qemu = FirmwareQemu(
        VMID, tmp_path_factory.mktemp("labqemu"), run_dir=cluster.nodes[1].directory / "run" / "qemu-server"
    )
    yield cluster, node1, qemu
    qemu.stop()


def until(check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_a_vm_running_on_node2_is_running_in_node1s_resources(lab):
    _cluster, node1, _qemu = lab

    def running() -> dict | None:
        entries = {e["id"]: e for e in node1.get("/cluster/resources")[1]}
        entry = entries.get(f"qemu/{VMID}")
        return entries if entry and entry["status"] == "running" else None

    entries = until(running)
    vm = entries[f"qemu/{VMID}"]
    assert vm["node"] == "node2" and vm["mem"] > 0 and vm["maxmem"] == 64 * 1024 * 1024
    assert isinstance(vm["cpu"], float) and vm["uptime"] >= 0 and "lock" not in vm
    assert entries[f"qemu/{STOPPED_VMID}"]["status"] == "stopped"
    assert entries[f"qemu/{STOPPED_VMID}"]["node"] == "node3"
    for name in ("node1", "node2", "node3"):
        assert entries[f"node/{name}"]["status"] == "online" and entries[f"node/{name}"]["maxmem"] > 0
        assert entries[f"storage/{name}/local"]["status"] == "available"
    vms_only = node1.get("/cluster/resources", type="vm")[1]
    assert {e["id"] for e in vms_only} == {f"qemu/{VMID}", f"qemu/{STOPPED_VMID}"}


def test_status_current_and_rrddata_of_another_node_are_forwarded(lab):
    _cluster, node1, qemu = lab
    code, data = node1.get(f"/nodes/node2/qemu/{VMID}/status/current")
    assert code == 200 and data["status"] == "running" and data["pid"] == qemu.pid
    code, data = node1.get(f"/nodes/node3/qemu/{STOPPED_VMID}/status/current")
    assert code == 200 and data["status"] == "stopped"
    code, rows = node1.get("/nodes/node2/rrddata", timeframe="hour")
    assert code == 200 and len(rows) == 70
    code, status = node1.get("/nodes/node3/status")
    assert code == 200 and status["memory"]["total"] > 0
    code, listed = node1.get("/nodes/node2/qemu")
    assert code == 200 and [e["vmid"] for e in listed if e["status"] == "running"] == [VMID]


def test_every_node_has_vmbr0(lab):
    _cluster, node1, _ = lab
    for name in ("node1", "node2", "node3"):
        code, bridges = node1.get(f"/nodes/{name}/network", type="any_bridge")
        assert code == 200 and [b["iface"] for b in bridges] == ["vmbr0"]
        code, eth0 = node1.get(f"/nodes/{name}/network/eth0")
        assert code == 200 and eth0["type"] == "eth" and eth0["address"].startswith("10.213.0.")
    assert node1.get("/nodes/node1/network/nosuch0")[0] == 500
