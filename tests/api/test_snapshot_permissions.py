"""Permission matrix of the snapshot endpoints with real ACLs, a real storage and real tasks.

qemu-server's rules on ``/vms/{vmid}``: list VM.Audit; create, delete and describe VM.Snapshot;
rollback VM.Snapshot or VM.Snapshot.Rollback, and VM.PowerMgmt too when ``start`` is asked; a
snapshot's config any of VM.Snapshot, VM.Snapshot.Rollback, VM.Audit. A refusal changes nothing.
"""

from __future__ import annotations

import pytest
from django.test import Client

from authz import services as authz_services
from authz.models import ACLEntry, Role, User
from portal.models import Task
from replicator import client as replicator_client
from tests.api_client import finished_task
from vms import services
from vms.models import VM

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
NODE = "testnode"
PASSWORD = "snap-matrix-password"
VMID = 8320
ROLES = {
    "SnapTaker": ["VM.Snapshot"],
    "SnapRoller": ["VM.Snapshot.Rollback"],
    "SnapStarter": ["VM.Snapshot.Rollback", "VM.PowerMgmt"],
}
USERS = {"snp-nobody@pve": None, "snp-auditor@pve": "PVEAuditor", "snp-taker@pve": "SnapTaker",
         "snp-roller@pve": "SnapRoller", "snp-starter@pve": "SnapStarter", "snp-other@pve": "PVEVMAdmin"}  # fmt: skip


def login(userid: str, password: str = PASSWORD) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    data = client.post(f"{API}/access/ticket", {"username": userid, "password": password}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client, data["CSRFPreventionToken"]


@pytest.fixture(scope="module")
def clients(tmp_path_factory) -> dict[str, tuple[Client, str]]:
    root = User.objects.get(userid="root@pam")
    path = tmp_path_factory.mktemp("snapapi")
    services.create_storage("snapapi", {"type": "dir", "path": str(path), "content": "images"}, actor=root)
    services.create_vm(VMID, {"name": "snaps", "scsi0": "snapapi:0.01,format=qcow2"}, node=NODE, actor=root)
    for roleid, privs in ROLES.items():
        if not Role.objects.filter(roleid=roleid).exists():
            authz_services.save_role(roleid, privs, actor=root, create=True)
    for userid, role in USERS.items():
        if not User.objects.filter(userid=userid).exists():
            authz_services.add_user(userid, actor=root, password=PASSWORD)
        for entry in ACLEntry.objects.filter(ugid=userid):
            entry.delete()
        if role:
            target = f"/vms/{VMID + 1}" if userid == "snp-other@pve" else f"/vms/{VMID}"
            authz_services.modify_acl(root, target, [role], users=[userid])
    made = {userid: login(userid) for userid in USERS}
    made["root@pam"] = login("root@pam", "test-root-password")
    return made


def call(clients, userid: str, method: str, path: str, body: str = "") -> tuple[int, dict]:
    client, csrf = clients[userid]
    answer = getattr(client, method)(
        f"{API}/nodes/{NODE}/qemu/{VMID}/{path}",
        body,
        content_type="application/x-www-form-urlencoded",
        HTTP_CSRFPREVENTIONTOKEN=csrf,
    )
    return answer.status_code, answer.json()


def refused(clients, userids: list[str], method: str, path: str, body: str = "") -> None:
    before = replicator_client.status()["version"]
    for userid in userids:
        status, answer = call(clients, userid, method, path, body)
        assert status == 403, (userid, method, path, answer)
    assert replicator_client.status()["version"] == before, "a refused request changed something"


def passed(clients, userid: str, method: str, path: str, body: str = "", kind: str | None = None) -> object:
    status, answer = call(clients, userid, method, path, body)
    assert status == 200, (userid, method, path, answer)
    if kind:
        assert f":{kind}:{VMID}:{userid}:" in answer["data"]
        task: Task = finished_task(answer["data"])
        assert task.exitstatus == "OK", task.exitstatus
    return answer["data"]


def test_snapshot_matrix(clients):
    assert Client().get(f"{API}/nodes/{NODE}/qemu/{VMID}/snapshot").status_code == 401
    everyone_else = ["snp-nobody@pve", "snp-other@pve"]
    refused(clients, [*everyone_else, "snp-taker@pve"], "get", "snapshot")  # VM.Audit only
    assert [item["name"] for item in passed(clients, "snp-auditor@pve", "get", "snapshot")] == ["current"]

    refused(clients, [*everyone_else, "snp-auditor@pve", "snp-roller@pve"], "post", "snapshot", "snapname=first")
    passed(clients, "snp-taker@pve", "post", "snapshot", "snapname=first", kind="qmsnapshot")
    passed(clients, "root@pam", "post", "snapshot", "snapname=second", kind="qmsnapshot")
    assert set(VM.objects.get(vmid=VMID).snapshots) == {"first", "second"}

    refused(clients, everyone_else, "get", "snapshot/first/config")
    for userid in ("snp-auditor@pve", "snp-taker@pve", "snp-roller@pve"):
        assert passed(clients, userid, "get", "snapshot/first/config")["name"] == "snaps"
    refused(
        clients, [*everyone_else, "snp-auditor@pve", "snp-roller@pve"], "put", "snapshot/first/config", "description=x"
    )
    passed(clients, "snp-taker@pve", "put", "snapshot/first/config", "description=mine")
    assert VM.objects.get(vmid=VMID).snapshots["first"]["description"] == "mine"

    refused(clients, [*everyone_else, "snp-auditor@pve"], "post", "snapshot/first/rollback")
    refused(clients, ["snp-roller@pve", "snp-taker@pve"], "post", "snapshot/first/rollback", "start=1")  # VM.PowerMgmt
    passed(clients, "snp-roller@pve", "post", "snapshot/first/rollback", kind="qmrollback")
    passed(clients, "snp-taker@pve", "post", "snapshot/second/rollback", kind="qmrollback")
    assert VM.objects.get(vmid=VMID).config["parent"] == "second"

    refused(clients, [*everyone_else, "snp-auditor@pve", "snp-roller@pve"], "delete", "snapshot/second")
    passed(clients, "snp-taker@pve", "delete", "snapshot/second", kind="qmdelsnapshot")
    passed(clients, "root@pam", "delete", "snapshot/first?force=1", kind="qmdelsnapshot")
    vm = VM.objects.get(vmid=VMID)
    assert vm.snapshots == {} and "parent" not in vm.config


def test_parameters(clients):
    status, answer = call(clients, "root@pam", "post", "snapshot", "snapname=ok1&bogus=1")
    assert status == 400 and set(answer["errors"]) == {"bogus"}
    status, answer = call(clients, "root@pam", "post", "snapshot")
    assert status == 400 and set(answer["errors"]) == {"snapname"}
    status, answer = call(clients, "root@pam", "get", "snapshot/a%20b/config")
    assert status == 400 and set(answer["errors"]) == {"snapname"}
    status, answer = call(clients, "root@pam", "get", "snapshot/missing/config")
    assert status == 500 and "snapshot 'missing' does not exist" in answer["message"]
