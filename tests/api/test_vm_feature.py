"""``GET {vm}/feature``: snapshot (qcow2 or btrfs disks), clone (linked: a template), copy (always), on
the VM's node for local disks and on every node for shared ones; VM.Audit first; bad input refused."""

from __future__ import annotations

import pytest

from cluster.models import Node
from tests.api_client import API, logged_in, revoke_grants, users_with_grants
from vms.models import VM, Storage

pytestmark = [pytest.mark.usefixtures("replicator")]
NODE = "testnode"
QCOW, RAW, TEMPLATE, SHARED = 7660, 7661, 7662, 7663


@pytest.fixture(scope="module")
def clients(tmp_path_factory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("feature")
    for storeid, shared in (("ft-dir", False), ("ft-shared", True)):
        if not Storage.objects.filter(storeid=storeid).exists():
            Storage(storeid=storeid, path=str(path / storeid), shared=shared).save()
    disks = {
        QCOW: {"scsi0": f"ft-dir:{QCOW}/vm-{QCOW}-disk-0.qcow2"},
        RAW: {"scsi0": f"ft-dir:{RAW}/vm-{RAW}-disk-0.raw", "scsi1": f"ft-dir:{RAW}/vm-{RAW}-disk-1.qcow2"},
        TEMPLATE: {"scsi0": f"ft-dir:{TEMPLATE}/base-{TEMPLATE}-disk-0.raw", "template": "1"},
        SHARED: {"scsi0": f"ft-shared:{SHARED}/vm-{SHARED}-disk-0.qcow2"},
    }
    for vmid, config in disks.items():
        if not VM.objects.filter(vmid=vmid).exists():
            VM(vmid=vmid, node_id=NODE, config={"memory": "128", **config}).save()
    users_with_grants(
        ("ft-nobody@pve", "ft-auditor@pve"), "feature-pw", [(f"/vms/{QCOW}", "PVEAuditor", ["ft-auditor@pve"])]
    )
    yield {"root": logged_in(), "nobody": logged_in("ft-nobody@pve", "feature-pw"),
           "auditor": logged_in("ft-auditor@pve", "feature-pw")}  # fmt: skip
    revoke_grants(("ft-nobody@pve", "ft-auditor@pve"))
    for vm in VM.objects.filter(vmid__in=disks):  # their volumes exist nowhere: no later module may meet them
        vm.delete()
    for storage in Storage.objects.filter(storeid__in=("ft-dir", "ft-shared")):
        storage.delete()


def feature(client, vmid: int, name: str, **extra: str):  # type: ignore[no-untyped-def]
    response = client.get(f"{API}/nodes/{NODE}/qemu/{vmid}/feature", {"feature": name, **extra})
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("vmid", "name", "expected"),
    [(QCOW, "snapshot", 1), (RAW, "snapshot", 0), (QCOW, "clone", 0), (TEMPLATE, "clone", 1), (RAW, "copy", 1)],
)
def test_features_by_disk_format_and_template(clients, vmid, name, expected):
    status, body = feature(clients["root"], vmid, name)
    assert status == 200, body
    assert body["data"] == {"hasFeature": expected, "nodes": [NODE] if expected else []}


def test_shared_disks_are_available_on_every_node(clients):
    nodes = sorted(Node.objects.values_list("name", flat=True))
    assert feature(clients["root"], SHARED, "snapshot")[1]["data"] == {"hasFeature": 1, "nodes": nodes}


def test_vm_audit_first_and_bad_input(clients):
    assert feature(clients["nobody"], QCOW, "snapshot")[0] == 403
    assert feature(clients["nobody"], 999999, "snapshot")[0] == 403  # the same answer for a missing VM
    assert feature(clients["auditor"], QCOW, "snapshot")[0] == 200
    status, body = feature(clients["root"], QCOW, "teleport")
    assert status == 400 and "feature" in body["errors"]
    status, body = feature(clients["root"], QCOW, "snapshot", snapname="nosuch")
    assert status == 500 and "does not exist" in body["message"]
