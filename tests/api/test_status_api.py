"""The live status endpoints over a real firmware-only QEMU: status/current, the node's VM list,
/nodes/{n}/status, rrddata and /cluster/resources (with what each caller may see)."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from authz import services
from authz.models import ACLEntry, Pool, User
from tests.vms.firmware_qemu import FirmwareQemu
from vms.models import VM, Storage
from vms.status import rrd
from vms.status.collector import Collector

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
NODE = "testnode"
PASSWORD = "status-password"
RUNNING, STOPPED = 9201, 9202


def login(userid: str) -> Client:
    client = Client()
    password = "test-root-password" if userid == "root@pam" else PASSWORD
    data = client.post(f"{API}/access/ticket", {"username": userid, "password": password}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client


def get(client: Client, path: str, **query) -> tuple[int, object]:
    response = client.get(f"{API}{path}", query)
    return response.status_code, response.json().get("data")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = User.objects.get(userid="root@pam")
    for userid in ("st-vmaudit@pve", "st-sysaudit@pve", "st-nobody@pve"):
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=root, password=PASSWORD)
    for entry in ACLEntry.objects.filter(ugid__in=["st-vmaudit@pve", "st-sysaudit@pve"]):
        entry.delete()
    services.modify_acl(root, f"/vms/{RUNNING}", ["PVEAuditor"], users=["st-vmaudit@pve"])
    services.modify_acl(root, "/storage/local", ["PVEAuditor"], users=["st-vmaudit@pve"])
    services.modify_acl(root, f"/nodes/{NODE}", ["PVEAuditor"], users=["st-sysaudit@pve"])
    if not Pool.objects.filter(poolid="stpool").exists():
        Pool(poolid="stpool", comment="status pool").save()
    VM.objects.filter(vmid__in=(RUNNING, STOPPED)).delete()
    VM(vmid=RUNNING, node_id=NODE, config={"name": "live", "memory": "64", "cores": "1", "agent": "1"}).save()
    VM(
        vmid=STOPPED,
        node_id=NODE,
        config={"name": "idle", "memory": "128", "cores": "2", "sockets": "2", "tags": "a;b",
                "scsi0": "local:9202/vm-9202-disk-0.qcow2,size=4G"},
        lock="backup",
        pool_id="stpool",
    ).save()  # fmt: skip
    Path(settings.PVE_LOCAL_STORAGE_PATH).mkdir(parents=True, exist_ok=True)
    qemu = FirmwareQemu(RUNNING, tmp_path_factory.mktemp("qemu"))
    Collector(NODE).round()
    yield {"root": login("root@pam"), "qemu": qemu}
    qemu.stop()
    VM.objects.filter(vmid__in=(RUNNING, STOPPED)).delete()  # the session's node is shared by every module
    Pool.objects.filter(poolid="stpool").delete()


def test_status_current_of_a_running_vm(setup):
    code, data = get(setup["root"], f"/nodes/{NODE}/qemu/{RUNNING}/status/current")
    assert code == 200
    assert data["status"] == "running" and data["qmpstatus"] == "running"
    assert data["pid"] == setup["qemu"].pid
    assert isinstance(data["cpu"], float) and isinstance(data["mem"], int) and data["mem"] > 0
    assert data["maxmem"] == 64 * 1024 * 1024 and data["cpus"] == 1
    assert isinstance(data["uptime"], int)
    assert data["ha"] == {"managed": 0} and data["agent"] == 1
    assert "lock" not in data


def test_status_current_of_a_stopped_locked_vm(setup):
    code, data = get(setup["root"], f"/nodes/{NODE}/qemu/{STOPPED}/status/current")
    assert code == 200
    assert data["status"] == "stopped" and data["qmpstatus"] == "stopped"
    assert "pid" not in data and data["uptime"] == 0
    assert data["lock"] == "backup" and data["cpus"] == 4 and data["maxdisk"] == 4 * 1024**3
    assert data["tags"] == "a;b" and "agent" not in data


def test_a_vm_started_after_the_last_round_is_running_at_once(setup, tmp_path):
    VM.objects.filter(vmid=9203).delete()
    VM(vmid=9203, node_id=NODE, config={"name": "fresh"}).save()
    fresh = FirmwareQemu(9203, tmp_path)
    try:
        code, data = get(setup["root"], f"/nodes/{NODE}/qemu/9203/status/current")
        assert code == 200
        assert data["status"] == "running" and data["pid"] == fresh.pid
        assert data["qmpstatus"] == "running", "asked QMP itself: the collector has not seen it"
    finally:
        fresh.stop()
        VM.objects.filter(vmid=9203).delete()


def test_the_node_vm_list_is_filtered_and_live(setup):
    code, data = get(setup["root"], f"/nodes/{NODE}/qemu", full=1)
    by_id = {entry["vmid"]: entry for entry in data}
    assert by_id[RUNNING]["status"] == "running" and by_id[RUNNING]["qmpstatus"] == "running"
    assert by_id[RUNNING]["pid"] == setup["qemu"].pid
    assert by_id[STOPPED]["status"] == "stopped" and by_id[STOPPED]["lock"] == "backup"
    code, data = get(login("st-vmaudit@pve"), f"/nodes/{NODE}/qemu")
    assert code == 200 and [entry["vmid"] for entry in data] == [RUNNING]


def test_node_status(setup):
    code, data = get(setup["root"], f"/nodes/{NODE}/status")
    assert code == 200
    assert data["memory"]["total"] > 0 and data["swap"]["total"] >= 0 and data["rootfs"]["total"] > 0
    assert len(data["loadavg"]) == 3 and isinstance(data["cpu"], float)
    assert data["cpuinfo"]["cpus"] >= 1 and data["kversion"].startswith("Linux")
    assert data["current-kernel"]["sysname"] == "Linux" and data["pveversion"].startswith("pve-manager/")
    assert get(login("st-vmaudit@pve"), f"/nodes/{NODE}/status")[0] == 403
    assert get(login("st-sysaudit@pve"), f"/nodes/{NODE}/status")[0] == 200


def test_rrddata_from_the_ring_store(setup):
    store = rrd.RRDStore()
    now = time.time()
    start = (int(now) // 1800 - 1) * 1800  # the last half hour: both minutes in one "day" row
    for offset, cpu in ((0, 0.2), (30, 0.4), (60, 0.9), (120, 0.1)):  # two finished minutes
        store.update(f"vm/{RUNNING}", start + offset, [1, cpu, 64, 10, 0, 0, 5, 6, 7, 8])
    store.close()
    code, rows = get(setup["root"], f"/nodes/{NODE}/qemu/{RUNNING}/rrddata", timeframe="hour")
    assert code == 200 and len(rows) == 70
    by_time = {row["time"]: row for row in rows}
    assert by_time[start]["cpu"] == pytest.approx(0.3) and by_time[start + 60]["cpu"] == pytest.approx(0.9)
    assert set(by_time[start]) == {"time", *rrd.FIELDS["vm"]}
    code, rows = get(setup["root"], f"/nodes/{NODE}/qemu/{RUNNING}/rrddata", timeframe="day", cf="MAX")
    assert max(row.get("cpu", 0) for row in rows) == pytest.approx(0.9)
    code, rows = get(setup["root"], f"/nodes/{NODE}/qemu/{RUNNING}/rrddata", timeframe="day", cf="AVERAGE")
    assert max(row.get("cpu", 0) for row in rows) < 0.9
    assert get(setup["root"], f"/nodes/{NODE}/qemu/{RUNNING}/rrddata", timeframe="decade")[0] == 400
    assert get(setup["root"], f"/nodes/{NODE}/qemu/{RUNNING}/rrddata")[0] == 400
    assert get(setup["root"], f"/nodes/{NODE}/rrddata", timeframe="week")[0] == 200
    assert get(setup["root"], f"/nodes/{NODE}/storage/local/rrddata", timeframe="month")[0] == 200
    assert get(setup["root"], f"/nodes/{NODE}/storage/nosuch/rrddata", timeframe="month")[0] == 400


def wait_resources(client: Client, predicate, **query) -> list[dict]:
    deadline = time.monotonic() + 30
    while True:
        code, data = get(client, "/cluster/resources", **query)
        assert code == 200
        if predicate(data):
            return data
        assert time.monotonic() < deadline, data
        Collector(NODE).round()
        time.sleep(0.3)


def test_cluster_resources_for_root(setup):
    def ready(data: list[dict]) -> bool:
        states = {e["id"]: e.get("status") for e in data}
        return states.get(f"qemu/{RUNNING}") == "running" and states.get(f"storage/{NODE}/local") == "available"

    data = wait_resources(setup["root"], ready)
    by_id = {entry["id"]: entry for entry in data}
    running, stopped = by_id[f"qemu/{RUNNING}"], by_id[f"qemu/{STOPPED}"]
    assert running["type"] == "qemu" and running["vmid"] == RUNNING and running["node"] == NODE
    assert running["template"] == 0 and running["maxcpu"] == 1 and isinstance(running["cpu"], float)
    assert running["mem"] > 0 and "lock" not in running
    assert stopped["status"] == "stopped" and stopped["lock"] == "backup" and stopped["pool"] == "stpool"
    assert stopped["maxdisk"] == 4 * 1024**3 and stopped["tags"] == "a;b"
    node = by_id[f"node/{NODE}"]
    assert node["status"] == "online" and node["maxmem"] > 0 and isinstance(node["cpu"], float)
    assert by_id[f"storage/{NODE}/local"]["status"] == "available"
    assert by_id["pool/stpool"] == {"id": "pool/stpool", "type": "pool", "pool": "stpool", "comment": "status pool"}
    vms_only = get(setup["root"], "/cluster/resources", type="vm")[1]
    assert {entry["type"] for entry in vms_only} == {"qemu"}
    assert get(setup["root"], "/cluster/resources", type="bogus")[0] == 400


def test_cluster_resources_are_filtered_by_privilege(setup):
    data = get(login("st-vmaudit@pve"), "/cluster/resources")[1]
    assert [e["vmid"] for e in data if e["type"] == "qemu"] == [RUNNING]
    assert [e["storage"] for e in data if e["type"] == "storage"] == ["local"]
    assert not [e for e in data if e["type"] == "pool"]
    node = next(e for e in data if e["type"] == "node")
    assert "mem" not in node and "cpu" not in node, "no Sys.Audit: no statistics"
    data = get(login("st-nobody@pve"), "/cluster/resources")[1]
    assert {e["type"] for e in data} == {"node"}
    assert Client().get(f"{API}/cluster/resources").status_code == 401


def test_cluster_resources_gzip_for_clients_that_accept_it(setup):
    plain = setup["root"].get(f"{API}/cluster/resources")
    assert "Content-Encoding" not in plain and plain["Vary"] == "Accept-Encoding"
    packed = setup["root"].get(f"{API}/cluster/resources", HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert packed["Content-Encoding"] == "gzip"
    answer = json.loads(gzip.decompress(packed.content))["data"]
    assert {e["id"] for e in answer} == {e["id"] for e in plain.json()["data"]}
    refused = setup["root"].get(f"{API}/cluster/resources", HTTP_ACCEPT_ENCODING="gzip;q=0, identity")
    assert "Content-Encoding" not in refused
    narrow = login("st-vmaudit@pve").get(f"{API}/cluster/resources", HTTP_ACCEPT_ENCODING="gzip")
    shown = json.loads(gzip.decompress(narrow.content))["data"]
    assert [e["vmid"] for e in shown if e["type"] == "qemu"] == [RUNNING], "a shared packed answer is per rule"


def test_a_pool_grants_its_vms(setup):
    root = User.objects.get(userid="root@pam")
    services.modify_acl(root, "/pool/stpool", ["PVEAuditor"], users=["st-nobody@pve"])
    try:
        data = get(login("st-nobody@pve"), "/cluster/resources")[1]
        assert [e["vmid"] for e in data if e["type"] == "qemu"] == [STOPPED]
        assert [e["id"] for e in data if e["type"] == "pool"] == ["pool/stpool"]
    finally:
        for entry in ACLEntry.objects.filter(ugid="st-nobody@pve"):
            entry.delete()


def test_storage_entries_exist_per_enabled_node(setup):
    assert Storage.objects.filter(storeid="local").exists()
    data = get(setup["root"], "/cluster/resources", type="storage")[1]
    assert all(entry["id"] == f"storage/{entry['node']}/{entry['storage']}" for entry in data)
