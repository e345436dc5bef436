"""Permission matrix of ``POST .../qemu/{vmid}/clone`` and ``.../template`` with real ACLs and real storage.

qemu-server's rules: clone needs VM.Clone on the source, VM.Allocate on ``/vms/{newid}`` (or on
``/pool/{pool}`` when a pool is given; here VM.Allocate on the VMID into a pool also takes
Pool.Allocate on it, as a create does) and Datastore.AllocateSpace on each storage a disk is
made on (``storage`` when given, else the source disk's). Template needs VM.Allocate on the VM.
A refusal changes nothing; a pass answers with a ``qmclone`` / ``qmtemplate`` UPID.
"""

from __future__ import annotations

import pytest
from django.test import Client

from authz import services as authz_services
from authz.models import ACLEntry, Pool, User
from portal.models import Task
from portal.tasks.logs import read_log
from replicator import client as replicator_client
from vms import services
from vms.models import VM, Storage

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
NODE = "testnode"
PASSWORD = "clone-matrix-password"
SOURCE = 7900
USERS = ("cl-nobody@pve", "cl-cloner@pve", "cl-pool@pve", "cl-owner@pve")


def login(userid: str, password: str = PASSWORD) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    data = client.post(f"{API}/access/ticket", {"username": userid, "password": password}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client, data["CSRFPreventionToken"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, tuple[Client, str]]:
    root = User.objects.get(userid="root@pam")
    for storeid in ("clapi", "clapi2"):
        path = tmp_path_factory.mktemp(storeid)
        services.create_storage(storeid, {"type": "dir", "path": str(path), "content": "images"}, actor=root)
    services.create_vm(SOURCE, {"name": "src", "scsi0": "clapi:0.01,format=qcow2"}, node=NODE, actor=root)
    services.create_vm(SOURCE + 1, {"name": "tpl", "scsi0": "clapi:0.01,format=raw"}, node=NODE, actor=root)
    if not Pool.objects.filter(poolid="clpool").exists():
        authz_services.add_pool("clpool", actor=root)
    for userid in USERS:
        if not User.objects.filter(userid=userid).exists():
            authz_services.add_user(userid, actor=root, password=PASSWORD)
    for entry in ACLEntry.objects.filter(ugid__in=USERS):
        entry.delete()
    acl = authz_services.modify_acl
    for userid in ("cl-cloner@pve", "cl-pool@pve"):
        acl(root, f"/vms/{SOURCE}", ["PVETemplateUser"], users=[userid])
        acl(root, "/storage/clapi", ["PVEDatastoreUser"], users=[userid])
    acl(root, "/vms/7910", ["PVEVMAdmin"], users=["cl-cloner@pve"])  # may allocate 7910 only
    acl(root, "/vms/7911", ["PVEVMAdmin"], users=["cl-cloner@pve"])
    acl(root, "/pool/clpool", ["PVEVMAdmin"], users=["cl-pool@pve"])  # VM.Allocate in the pool
    acl(root, f"/vms/{SOURCE + 1}", ["PVETemplateUser"], users=["cl-owner@pve"])
    acl(root, f"/vms/{SOURCE}", ["PVEVMAdmin"], users=["cl-owner@pve"])
    clients = {userid: login(userid) for userid in USERS}
    clients["root@pam"] = login("root@pam", "test-root-password")
    return clients


def post(setup, userid: str, path: str, **params: object) -> tuple[int, dict]:
    client, csrf = setup[userid]
    response = client.post(f"{API}/nodes/{NODE}/qemu/{path}", params, HTTP_CSRFPREVENTIONTOKEN=csrf)
    return response.status_code, response.json()


def refused(setup, userid: str, path: str, missing: str, **params: object) -> None:
    before = replicator_client.status()["version"]
    status, body = post(setup, userid, path, **params)
    assert status == 403, (userid, params, body)
    assert missing in body["message"], (userid, params, body)
    assert replicator_client.status()["version"] == before, "a refused request changed something"


def passed(setup, userid: str, path: str, kind: str, **params: object) -> Task:
    status, body = post(setup, userid, path, **params)
    assert status == 200 and body["data"].startswith(f"UPID:{NODE}:"), (userid, params, body)
    assert f":{kind}:{path.split('/')[0]}:{userid}:" in body["data"]
    task = Task.objects.get(upid=body["data"])
    assert task.exitstatus == "OK", task.exitstatus
    return task


def test_clone_matrix(setup):
    path = f"{SOURCE}/clone"
    assert Client().post(f"{API}/nodes/{NODE}/qemu/{path}", {"newid": 7910}).status_code == 401
    refused(setup, "cl-nobody@pve", path, "VM.Clone", newid=7910)
    refused(setup, "cl-cloner@pve", path, "/vms/7912", newid=7912)  # VM.Allocate on another VMID only
    refused(setup, "cl-cloner@pve", path, "/storage/clapi2", newid=7910, storage="clapi2")
    refused(setup, "cl-cloner@pve", path, "/pool/clpool", newid=7910, pool="clpool")  # no Pool.Allocate
    refused(setup, "cl-pool@pve", path, "/vms/7912", newid=7912)  # the pool's right needs the pool
    passed(setup, "cl-cloner@pve", path, "qmclone", newid=7910, name="by-cloner")
    assert VM.objects.get(vmid=7910).config["name"] == "by-cloner" and VM.objects.get(vmid=7910).pool_id is None
    passed(setup, "cl-pool@pve", path, "qmclone", newid=7912, pool="clpool")
    assert VM.objects.get(vmid=7912).pool_id == "clpool"
    passed(setup, "root@pam", path, "qmclone", newid=7913, storage="clapi2", format="raw")
    assert VM.objects.get(vmid=7913).config["scsi0"].startswith("clapi2:7913/vm-7913-disk-0.raw,")


def test_clone_parameters_are_checked(setup):
    path = f"{SOURCE}/clone"
    status, body = post(setup, "root@pam", path)
    assert status == 400 and "newid" in body["errors"]
    status, body = post(setup, "root@pam", path, newid=7914, format="qed", bogus=1)
    assert status == 400 and set(body["errors"]) == {"bogus"}
    status, body = post(setup, "root@pam", path, newid=7914, format="qed")
    assert status == 400 and set(body["errors"]) == {"format"}
    status, body = post(setup, "root@pam", path, newid=SOURCE)
    assert status == 500 and "already exists" in body["message"]
    status, body = post(setup, "root@pam", path, newid=7914, snapname="first")
    assert status == 500 and "snapshot 'first' does not exist" in body["message"]
    assert not VM.objects.filter(vmid=7914).exists()


def test_template_matrix_and_linked_clone(setup):
    path = f"{SOURCE + 1}/template"
    refused(setup, "cl-nobody@pve", path, "VM.Allocate")
    refused(setup, "cl-owner@pve", path, "VM.Allocate")  # VM.Clone and VM.Audit only
    task = passed(setup, "root@pam", path, "qmtemplate")
    lines, _total = read_log(task.upid, 0, 100)
    assert any("converted clapi:7901/vm-7901-disk-0.raw to base volume" in str(line["t"]) for line in lines)
    status, body = post(setup, "root@pam", path)
    assert status == 500 and "convert a template to a template" in body["message"]
    refused(setup, "cl-owner@pve", f"{SOURCE + 1}/clone", "/vms/7911", newid=7911)
    passed(setup, "root@pam", f"{SOURCE + 1}/clone", "qmclone", newid=7911)
    scsi0 = VM.objects.get(vmid=7911).config["scsi0"]
    assert scsi0.startswith("clapi:7901/base-7901-disk-0.raw/7911/vm-7911-disk-0.qcow2,")
    owner_template = f"{SOURCE}/template"
    passed(setup, "cl-owner@pve", owner_template, "qmtemplate")
    assert Storage.objects.filter(storeid="clapi").exists()
