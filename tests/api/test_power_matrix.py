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
