"""Permission matrix of ``/nodes/{node}/qemu/{vmid}/status/*`` with real ACLs (qemu-server's checks).

Every command needs ``VM.PowerMgmt`` on ``/vms/{vmid}``: anonymous 401, no privilege 403, the
privilege on another VM 403, an auditor (VM.Audit only) 403, the holder passes (200 with a UPID;
for the commands that need a running VM, the 500 "not running" that comes after the check),
root passes. Refusals change nothing. ``skiplock`` is root@pam's only; the status index is open
to every authenticated user, as in Proxmox.
"""

from __future__ import annotations

import time

import pytest
from django.test import Client

from authz import services
from authz.models import ACLEntry, User
from portal.models import Task
from replicator import client as replicator_client
from vms.models import VM
from vms.qemu import lifecycle, process

pytestmark = [pytest.mark.usefixtures("replicator", "celery_worker")]
API = "/api2/json"
NODE = "testnode"
PASSWORD = "matrix-password"
VMID, OTHER = 7800, 7801
USERS = ("pw-nobody@pve", "pw-other@pve", "pw-auditor@pve", "pw-holder@pve")
# command, whether it needs a running VM (a stopped one answers 500 after the permission check)
COMMANDS = [
    ("start", False),
    ("stop", False),
    ("shutdown", False),
    ("reboot", True),
    ("reset", True),
    ("suspend", True),
    ("resume", True),
]


def login(userid: str, password: str = PASSWORD) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    data = client.post(f"{API}/access/ticket", {"username": userid, "password": password}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client, data["CSRFPreventionToken"]


@pytest.fixture(scope="module")
def clients() -> dict[str, tuple[Client, str]]:
    root = User.objects.get(userid="root@pam")
    for userid in USERS:
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=root, password=PASSWORD)
    for vmid in (VMID, OTHER):
        if not VM.objects.filter(vmid=vmid).exists():
            VM(vmid=vmid, node_id=NODE, config={"name": f"pw{vmid}", "memory": "128"}).save()
    for entry in ACLEntry.objects.filter(ugid__in=USERS):
        entry.delete()
    services.modify_acl(root, f"/vms/{OTHER}", ["PVEVMUser"], users=["pw-other@pve"])
    services.modify_acl(root, f"/vms/{VMID}", ["PVEAuditor"], users=["pw-auditor@pve"])
    services.modify_acl(root, "/vms", ["PVEVMUser"], users=["pw-holder@pve"])  # propagated to /vms/<vmid>
    logged_in = {userid: login(userid) for userid in USERS}
    logged_in["root@pam"] = login("root@pam", "test-root-password")
    return logged_in


def finished(upid: str) -> Task:
    deadline = time.monotonic() + 60
    while (task := Task.objects.get(upid=upid)).status != Task.STOPPED:
        assert time.monotonic() < deadline, f"{upid} did not finish"
        time.sleep(0.05)
    return task


def post(client: Client, csrf: str, command: str, **params: object) -> tuple[int, dict]:
    response = client.post(f"{API}/nodes/{NODE}/qemu/{VMID}/status/{command}", params, HTTP_CSRFPREVENTIONTOKEN=csrf)
    return response.status_code, response.json()


@pytest.mark.parametrize(("command", "needs_running"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_matrix(clients, command, needs_running):
    before = replicator_client.status()["version"]
    assert Client().post(f"{API}/nodes/{NODE}/qemu/{VMID}/status/{command}").status_code == 401
    for userid in ("pw-nobody@pve", "pw-other@pve", "pw-auditor@pve"):
        status, body = post(*clients[userid], command)
        assert status == 403, (userid, body)
        assert "VM.PowerMgmt" in body["message"]
    assert replicator_client.status()["version"] == before, "a refused request changed something"
    assert process.is_running(VMID) is False
    for userid in ("pw-holder@pve", "root@pam"):
        status, body = post(*clients[userid], command)
        if needs_running:
            assert (status, body["message"].strip()) == (500, f"VM {VMID} not running"), (userid, body)
        else:
            assert status == 200 and body["data"].startswith(f"UPID:{NODE}:"), (userid, body)
            assert f":{'qm' + command}:{VMID}:{userid}:" in body["data"]
            finished(body["data"])
        lifecycle.stop_vm(VMID, log=lambda line: None)  # a start by the holder is undone at once


def test_skiplock_is_root_only(clients):
    status, body = post(*clients["pw-holder@pve"], "stop", skiplock=1)
    assert status == 400 and body["errors"]["skiplock"] == "Only root may use this option."
    status, body = post(*clients["root@pam"], "stop", skiplock=1)
    assert status == 200 and finished(body["data"]).exitstatus == "OK"


def test_status_index_is_open_to_every_user(clients):
    assert Client().get(f"{API}/nodes/{NODE}/qemu/{VMID}/status").status_code == 401
    client, _ = clients["pw-nobody@pve"]
    data = client.get(f"{API}/nodes/{NODE}/qemu/{VMID}/status").json()["data"]
    assert {"subdir": "current"} in data and {"subdir": "start"} in data and {"subdir": "reboot"} in data


# The target half of a live migration: what the source node's task asks of the target's API.
MIGRATING, FAR = 7802, "pw-far"
MIGRATION_PARAMS = [
    ("start", {"migratedfrom": FAR}),
    ("start", {"migratedfrom": FAR, "stateuri": "unix"}),
    ("start", {"migratedfrom": FAR, "migration_type": "insecure"}),
    ("start", {"migratedfrom": FAR, "migration_network": "10.0.0.0/24"}),
    ("start", {"migratedfrom": FAR, "machine": "pc-i440fx-7.2"}),
    ("start", {"migratedfrom": FAR, "nbd-disks": "scsi0=local:raw:1048576"}),
    ("stop", {"migratedfrom": FAR}),
    ("resume", {"nocheck": 1}),
]


@pytest.fixture(scope="module")
def migrating(clients):
    from cluster.models import Node

    if not Node.objects.filter(name=FAR).exists():
        Node(name=FAR, nodeid=9941, joining=True).save()  # no votes: quorum unchanged
    if not VM.objects.filter(vmid=MIGRATING).exists():
        VM(vmid=MIGRATING, node_id=FAR, config={"name": "pwmig", "memory": "128"}, lock="migrate").save()
    yield MIGRATING
    process.terminate(MIGRATING, timeout=5, log=lambda line: None)
    VM.objects.get(vmid=MIGRATING).delete()
    Node.objects.get(name=FAR).delete()  # later modules list the cluster's nodes


def post_to(client: Client, csrf: str, vmid: int, command: str, **params: object) -> tuple[int, dict]:
    response = client.post(f"{API}/nodes/{NODE}/qemu/{vmid}/status/{command}", params, HTTP_CSRFPREVENTIONTOKEN=csrf)
    return response.status_code, response.json()


@pytest.mark.parametrize(("command", "params"), MIGRATION_PARAMS)
def test_migration_parameters_are_root_at_pams_after_the_privilege(clients, migrating, command, params):
    before = replicator_client.status()["version"]
    for userid in ("pw-nobody@pve", "pw-auditor@pve"):
        status, body = post_to(*clients[userid], migrating, command, **params)
        assert status == 403 and "VM.PowerMgmt" in body["message"], (userid, body)
    status, body = post_to(*clients["pw-holder@pve"], migrating, command, **params)
    assert status == 400, body
    assert set(body["errors"]) == set(params) and set(body["errors"].values()) == {"Only root may use this option."}
    assert replicator_client.status()["version"] == before
    assert not process.is_running(migrating)


@pytest.mark.parametrize(
    ("command", "params", "field"),
    [
        ("start", {"migratedfrom": "../etc"}, "migratedfrom"),
        ("start", {"migratedfrom": FAR, "stateuri": "file:/etc/shadow"}, "stateuri"),
        ("start", {"migratedfrom": FAR, "migration_network": "not-a-cidr"}, "migration_network"),
        ("start", {"migratedfrom": FAR, "nbd-disks": "scsi0=local:exe:1"}, "nbd-disks"),
        ("start", {"migratedfrom": FAR, "machine": "pc;reboot"}, "machine"),
        ("start", {"stateuri": "tcp"}, "stateuri"),
        ("start", {"migratedfrom": FAR, "targetstorage": "local"}, "targetstorage"),
    ],
)
def test_bad_migration_parameters_are_refused_and_start_nothing(clients, migrating, command, params, field):
    vmid = migrating if "migratedfrom" in params else VMID  # without it: an ordinary start of this node's VM
    status, body = post_to(*clients["root@pam"], vmid, command, **params)
    assert status == 400 and field in body["errors"], body
    assert not process.is_running(migrating)


def test_only_a_vm_of_the_named_node_locked_for_migration_is_started(clients, migrating):
    status, body = post_to(*clients["root@pam"], VMID, "start", migratedfrom=FAR)  # this node's own VM
    assert status == 500 and body["message"].strip() == f"VM {VMID} is not on node '{FAR}'", body
    status, body = post_to(*clients["root@pam"], migrating, "start", migratedfrom=NODE)
    assert status == 500 and body["message"].strip() == f"VM {migrating} is not on node '{NODE}'", body
    vm = VM.objects.get(vmid=migrating)
    vm.lock = ""
    vm.save()
    try:
        status, body = post_to(*clients["root@pam"], migrating, "start", migratedfrom=FAR)
        assert status == 500 and "not locked for a migration" in body["message"], body
    finally:
        vm.lock = "migrate"
        vm.save()
    assert not process.is_running(migrating)


def test_root_starts_and_stops_the_incoming_qemu_of_a_migration(clients, migrating):
    """The target's worker runs real QEMU in incoming mode; its task log tells the source where it listens."""
    status, body = post_to(*clients["root@pam"], migrating, "start", migratedfrom=FAR, stateuri="unix")
    assert status == 200 and f":qmstart:{migrating}:root@pam:" in body["data"], body
    task = finished(body["data"])
    assert task.exitstatus == "OK", task.exitstatus
    lines = [
        entry["t"] for entry in clients["root@pam"][0].get(f"{API}/nodes/{NODE}/tasks/{task.upid}/log").json()["data"]
    ]
    assert "migration listens on unix:" in "\n".join(lines), lines
    assert process.is_running(migrating)
    from vms.qemu import qmp

    assert qmp.status(migrating) == "inmigrate"
    status, body = post_to(*clients["root@pam"], migrating, "stop", migratedfrom=FAR)
    assert status == 200 and finished(body["data"]).exitstatus == "OK", body
    assert not process.is_running(migrating)
