"""``GET/POST /nodes/{node}/qemu/{vmid}/migrate`` with real ACLs, real storage and a second (vote-less) node row.

The precheck needs VM.Migrate on the VM and names the VM's local disks (with the drive and size
qemu-server reports), its local devices, and which nodes have every storage it uses.


``POST`` needs VM.Migrate, and with ``targetstorage`` VM.Config.Disk and Datastore.AllocateSpace
on each target storage; refusals change nothing. The ``qmigrate`` task runs on this node's worker:
a VM on shared storage only moves without copying anything; a VM with a local disk needs SSH to
the target, which this vote-less node row has no address for, so its task fails and changes nothing.
"""

from __future__ import annotations

import pytest
from django.test import Client

from authz import services as authz_services
from authz.models import ACLEntry, User
from cluster.models import Node
from portal.tasks.logs import read_log
from replicator import client as replicator_client
from tests.api.test_clone_permissions import login
from tests.api_client import finished_task
from vms import services
from vms.models import VM, Storage

pytestmark = [pytest.mark.usefixtures("replicator", "celery_worker")]
API = "/api2/json"
NODE = "testnode"
OTHER = "mig-other"
PASSWORD = "migrate-matrix-password"
VMID = 7950
USERS = ("mg-nobody@pve", "mg-migrator@pve")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = User.objects.get(userid="root@pam")
    if not Node.objects.filter(name=OTHER).exists():
        Node(name=OTHER, nodeid=9951, joining=True).save()  # no votes: quorum unchanged
    stores = {
        "mgshared": {"shared": "1"},
        "mglocal": {},
        "mgmine": {"nodes": NODE},  # a storage the other node lacks
    }
    for storeid, extra in stores.items():
        if not Storage.objects.filter(storeid=storeid).exists():
            path = tmp_path_factory.mktemp(storeid)
            options = {"type": "dir", "path": str(path), "content": "images,iso", **extra}
            services.create_storage(storeid, options, actor=root)
    config = {"scsi0": "mglocal:0.01,format=qcow2", "scsi1": "mgshared:0.01", "serial0": "socket", "usb0": "spice"}
    services.create_vm(VMID, config, node=NODE, actor=root)
    services.create_vm(VMID + 1, {"scsi0": "mgmine:0.01", "serial0": "/dev/ttyS0"}, node=NODE, actor=root)
    services.create_vm(VMID + 2, {"scsi0": "mgshared:0.01", "name": "on-shared"}, node=NODE, actor=root)
    for userid in USERS:
        if not User.objects.filter(userid=userid).exists():
            authz_services.add_user(userid, actor=root, password=PASSWORD)
    for entry in ACLEntry.objects.filter(ugid__in=USERS):
        entry.delete()
    authz_services.modify_acl(root, f"/vms/{VMID}", ["PVEVMUser"], users=["mg-nobody@pve"])  # no VM.Migrate
    for vmid in (VMID, VMID + 1, VMID + 2):
        authz_services.modify_acl(root, f"/vms/{vmid}", ["PVEVMAdmin"], users=["mg-migrator@pve"])
    clients = {userid: login(userid, PASSWORD) for userid in USERS}
    clients["root@pam"] = login("root@pam", "test-root-password")
    yield clients
    for vmid in (VMID, VMID + 1, VMID + 2):
        vm = VM.objects.filter(vmid=vmid).first()
        if vm is not None:
            services.destroy_vm(vm, actor=root)
    Node.objects.filter(name=OTHER).first().delete()


def get(setup, userid: str, vmid: int, **params: object) -> tuple[int, dict]:
    client, _csrf = setup[userid]
    response = client.get(f"{API}/nodes/{NODE}/qemu/{vmid}/migrate", params)
    return response.status_code, response.json()


def test_precheck_needs_vm_migrate(setup):
    assert Client().get(f"{API}/nodes/{NODE}/qemu/{VMID}/migrate").status_code == 401
    status, body = get(setup, "mg-nobody@pve", VMID)
    assert status == 403 and "VM.Migrate" in body["message"], body
    status, body = get(setup, "mg-nobody@pve", VMID + 1)  # nothing on that VM: the same answer, nothing revealed
    assert status == 403 and "VM.Migrate" in body["message"], body
    assert get(setup, "mg-migrator@pve", VMID)[0] == 200


def test_precheck_names_local_disks_devices_and_nodes(setup):
    status, body = get(setup, "root@pam", VMID, target=OTHER)
    assert status == 200, body
    data = body["data"]
    assert data["running"] == 0
    assert data["allowed_nodes"] == [OTHER] and data["not_allowed_nodes"] == {}
    assert data["local_resources"] == []  # a serial socket and USB spice redirection bind nothing to the node
    (disk,) = data["local_disks"]  # the shared storage's disk is not local
    assert disk["volid"] == f"mglocal:{VMID}/vm-{VMID}-disk-0.qcow2"
    assert disk["drivename"] == "scsi0" and disk["size"] == int(0.01 * 1024**3) and disk["referenced_in_config"] == 1

    data = get(setup, "mg-migrator@pve", VMID + 1)[1]["data"]
    assert data["allowed_nodes"] == []
    assert data["not_allowed_nodes"] == {OTHER: {"unavailable_storages": ["mgmine"]}}
    assert data["local_resources"] == ["serial0"]


def test_precheck_parameters_are_checked(setup):
    status, body = get(setup, "root@pam", VMID, target="not a node")
    assert status == 400 and set(body["errors"]) == {"target"}
    status, body = get(setup, "root@pam", VMID, bogus=1)
    assert status == 400 and set(body["errors"]) == {"bogus"}


def post(setup, userid: str, vmid: int, **params: object) -> tuple[int, dict]:
    client, csrf = setup[userid]
    response = client.post(f"{API}/nodes/{NODE}/qemu/{vmid}/migrate", params, HTTP_CSRFPREVENTIONTOKEN=csrf)
    return response.status_code, response.json()


def test_migrate_matrix_and_tasks(setup):
    before = replicator_client.status()["version"]
    status, body = post(setup, "mg-nobody@pve", VMID, target=OTHER)
    assert status == 403 and "VM.Migrate" in body["message"], body
    status, body = post(setup, "mg-migrator@pve", VMID, target=OTHER, targetstorage="mgshared")
    assert status == 403 and "(/storage/mgshared, Datastore.AllocateSpace)" in body["message"], body
    status, body = post(setup, "root@pam", VMID, target="nowhere")
    assert status == 400 and "no such cluster node 'nowhere'" in body["errors"]["target"], body
    status, body = post(setup, "root@pam", VMID, target=NODE)
    assert status == 400 and "target is local node" in body["errors"]["target"], body
    status, body = post(setup, "root@pam", VMID, target=OTHER, migration_type="plain", migration_network="10.1.2.3")
    assert status == 400 and set(body["errors"]) == {"migration_type", "migration_network"}, body
    status, body = post(setup, "root@pam", VMID, target=OTHER, **{"with-conntrack-state": 1})
    assert status == 400 and set(body["errors"]) == {"with-conntrack-state"}, body
    assert replicator_client.status()["version"] == before, "a refused request changed something"

    config = VM.objects.get(vmid=VMID).config_text()
    status, body = post(setup, "mg-migrator@pve", VMID, target=OTHER)
    assert status == 200 and f":qmigrate:{VMID}:mg-migrator@pve:" in body["data"], body
    task = finished_task(body["data"])
    assert f"unable to reach node '{OTHER}'" in task.exitstatus or "no address known" in task.exitstatus, (
        task.exitstatus
    )
    vm = VM.objects.get(vmid=VMID)
    assert (vm.node_id, vm.lock, vm.config_text()) == (NODE, "", config)

    status, body = post(  # force, migration_type and migration_network are root@pam's (as qemu-server)
        setup, "mg-migrator@pve", VMID + 2, target=OTHER, online=1, force=1, migration_type="insecure",
        migration_network="10.1.2.0/24",
    )  # fmt: skip
    assert status == 400 and body["errors"] == dict.fromkeys(
        ("force", "migration_type", "migration_network"), "Only root may use this option."
    ), body
    status, body = post(
        setup, "root@pam", VMID + 2, target=OTHER, online=1, migration_type="insecure",
        migration_network="10.1.2.0/24",
    )  # fmt: skip
    assert status == 200, body
    task = finished_task(body["data"])
    assert task.exitstatus == "OK", task.exitstatus
    lines = [str(line["t"]) for line in read_log(task.upid, 0, 100)[0]]
    assert lines[0] == "VM isn't running. Doing offline migration instead.", lines
    assert lines[1] == f"starting migration of VM {VMID + 2} to node '{OTHER}'"
    assert lines[-2].startswith("migration finished successfully") and lines[-1] == "TASK OK"
    vm = VM.objects.get(vmid=VMID + 2)
    assert (vm.node_id, vm.lock, vm.config["name"]) == (OTHER, "", "on-shared")
