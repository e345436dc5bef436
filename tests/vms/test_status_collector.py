"""The status collector (pvestatd) over real firmware-only QEMUs under KVM, real /proc and statvfs."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from django.conf import settings
from qemu.qmp import QMPClient

from replicator import client as replicator_client
from tests.vms.firmware_qemu import FirmwareQemu
from vms import runtime_paths
from vms.models import VM, Storage
from vms.status import collector as collector_module
from vms.status.collector import Collector

pytestmark = [pytest.mark.usefixtures("replicator")]
NODE = "testnode"
VMIDS = (9101, 9102)


def qmp(vmid: int, command: str) -> dict:
    async def run() -> dict:
        client = QMPClient("test")
        await client.connect(str(runtime_paths.vm_file(vmid, "qmp")))
        try:
            return await client.execute(command)
        finally:
            await client.disconnect()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def qemus(tmp_path_factory):
    for vmid in VMIDS:
        if not VM.objects.filter(vmid=vmid).exists():
            VM(vmid=vmid, node_id=NODE, config={"name": f"st{vmid}", "memory": "64", "cores": "1"}).save()
    workdir = tmp_path_factory.mktemp("qemu")
    started = {vmid: FirmwareQemu(vmid, workdir) for vmid in VMIDS}
    yield started
    for qemu in started.values():
        qemu.stop()


def test_a_round_reports_each_running_qemu_from_qmp_and_proc(qemus):
    collector = Collector(NODE)
    collector.round()
    snapshot = collector.round()
    for vmid, qemu in qemus.items():
        entry = snapshot["vms"][vmid]
        assert entry["status"] == "running"
        assert entry["qmpstatus"] == "running"
        assert entry["pid"] == qemu.pid
        assert entry["maxmem"] == 64 * 1024 * 1024 and entry["cpus"] == 1
        assert entry["mem"] > 1024 * 1024, "the QEMU's resident memory"
        assert isinstance(entry["cpu"], float) and 0.0 <= entry["cpu"] <= 1.0
        assert isinstance(entry["uptime"], int) and 0 <= entry["uptime"] < 3600
        assert isinstance(entry["diskread"], int) and isinstance(entry["diskwrite"], int)
    assert set(snapshot["vms"]) >= set(VMIDS)


def test_cpu_is_the_process_time_used_between_two_rounds(qemus):
    """A round's cpu is the QEMU's utime+stime since the last round over the elapsed time."""
    collector = Collector(NODE)
    collector.round()
    before = collector.previous_vms[9101]
    while True:  # a positive signal: the QEMU used some CPU since the first round
        sample = collector_module.procfs.process_sample(qemus[9101].pid)
        if sample.cpu_ticks > before.sample.cpu_ticks:
            break
        qmp(9101, "query-status")  # make it do a little work
    snapshot = collector.round()
    after = collector.previous_vms[9101]
    used = (after.sample.cpu_ticks - before.sample.cpu_ticks) / collector_module.procfs.CLOCK_TICKS
    expected = min(used / (after.when - before.when), 1.0)
    assert snapshot["vms"][9101]["cpu"] == pytest.approx(expected, abs=1e-5)
    assert snapshot["vms"][9101]["cpu"] > 0


def test_a_paused_vm_reports_its_qmpstatus(qemus):
    qmp(9101, "stop")
    try:
        assert Collector(NODE).round()["vms"][9101]["qmpstatus"] == "paused"
    finally:
        qmp(9101, "cont")
    assert Collector(NODE).round()["vms"][9101]["qmpstatus"] == "running"


def test_a_hung_qemu_costs_only_its_own_answer(qemus):
    qemus[9102].pause()
    try:
        snapshot = Collector(NODE).round()
    finally:
        qemus[9102].resume()
    assert snapshot["vms"][9101]["qmpstatus"] == "running"
    assert snapshot["vms"][9102]["status"] == "running", "its process is alive"
    assert snapshot["vms"][9102]["qmpstatus"] == "unknown", "its QMP did not answer in time"


def test_a_killed_qemu_is_gone_from_the_next_round(qemus, tmp_path):
    if not VM.objects.filter(vmid=9103).exists():
        VM(vmid=9103, node_id=NODE, config={"name": "st9103"}).save()
    qemu = FirmwareQemu(9103, tmp_path)
    collector = Collector(NODE)
    assert collector.round()["vms"][9103]["pid"] == qemu.pid
    qemu.stop()
    snapshot = collector.round()
    assert 9103 not in snapshot["vms"]
    assert 9101 in snapshot["vms"]


def test_node_and_storage_figures(qemus, tmp_path):
    Path(settings.PVE_LOCAL_STORAGE_PATH).mkdir(parents=True, exist_ok=True)
    for storeid, path, nodes in (("st-gone", tmp_path / "nowhere", ""), ("st-other", tmp_path, "othernode")):
        if not Storage.objects.filter(storeid=storeid).exists():
            Storage(storeid=storeid, type="dir", path=str(path), nodes=nodes).save()
    snapshot = Collector(NODE).round()
    assert snapshot["storages"]["st-gone"]["active"] == 0, "its directory does not exist"
    assert "st-other" not in snapshot["storages"], "not enabled on this node"
    status = snapshot["status"]
    assert status["memory"]["total"] > status["memory"]["used"] > 0
    assert status["rootfs"]["total"] >= status["rootfs"]["used"] > 0
    assert len(status["loadavg"]) == 3 and all(isinstance(v, str) for v in status["loadavg"])
    assert status["cpuinfo"]["cpus"] >= 1 and status["uptime"] > 0
    assert status["qemu-version"].count(".") >= 1
    local = snapshot["storages"]["local"]
    assert local["active"] == 1 and local["total"] >= local["used"] > 0 and local["avail"] > 0


def test_the_replicator_publishes_the_running_vms_to_the_cluster(qemus):
    Collector(NODE).round()
    deadline = time.monotonic() + 30
    while True:
        nodes = replicator_client.request({"op": "cluster_status", "fields": ["vms", "storages"]}, timeout=5)["nodes"]
        published = nodes.get(NODE, {}).get("vms", {})
        if "9101" in published:
            break
        assert time.monotonic() < deadline, f"not published: {nodes}"
        time.sleep(0.2)
    assert published["9101"]["pid"] == qemus[9101].pid
    assert "rates" not in published["9101"]
    assert "local" in nodes[NODE]["storages"]


def test_a_stale_snapshot_is_not_published(qemus):
    Collector(NODE).round()
    assert "9101" in collector_module.published()["vms"]
    path = collector_module.snapshot_path()
    data = json.loads(path.read_text())
    data["time"] -= 3600
    path.write_text(json.dumps(data))
    assert collector_module.published() == {}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
