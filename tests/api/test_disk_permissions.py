"""Permission matrix of the VM disk calls with real ACLs and real storages: resize, move_disk (and move-disk), unlink.

qemu-server's rules: each needs VM.Config.Disk on ``/vms/{vmid}``. ``resize`` checks
Datastore.AllocateSpace on the disk's storage inside its task (the UPID answers, the task fails);
``move_disk`` checks Datastore.AllocateSpace on the target storage, and with ``delete`` on the
source storage, before its task; ``unlink`` of a volume it frees (``unusedN``, or ``force``) needs
Datastore.AllocateSpace on its storage. Refusals change nothing (neither the cluster version
nor a file of the storages); a permitted call does what it says.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from authz import services as authz_services
from authz.models import ACLEntry, Role, User
from replicator import client as replicator_client
from tests.api_client import finished_task, login_enforcing_csrf
from vms import services
from vms.models import VM, Storage
from vms.storage import volumes
from vms.storage.volnames import format_size

pytestmark = [pytest.mark.usefixtures("replicator", "celery_worker")]
API = "/api2/json"
NODE = "testnode"
PASSWORD = "dk-password"
VMID, OTHER = 7830, 7831
MIB = 1024 * 1024
# user -> (ACL path, role) pairs; dk-disk-role holds VM.Config.Disk only, dk-space-role Datastore.AllocateSpace only
GRANTS = {
    "dk-nobody@pve": [],
    "dk-other@pve": [(f"/vms/{OTHER}", "dk-disk-role"), ("/storage", "dk-space-role")],
    "dk-disk@pve": [(f"/vms/{VMID}", "dk-disk-role")],
    "dk-target@pve": [(f"/vms/{VMID}", "dk-disk-role"), ("/storage/dk-dst", "dk-space-role")],
    "dk-full@pve": [(f"/vms/{VMID}", "dk-disk-role"), ("/storage/dk-src", "dk-space-role"),
                    ("/storage/dk-dst", "dk-space-role")],
}  # fmt: skip
VM_PATH = f"/vms/{VMID}"
DENIED_VM = f"Permission check failed ({VM_PATH}, VM.Config.Disk)"


@pytest.fixture(scope="module")
def clients(tmp_path_factory) -> dict[str, tuple[Client, str]]:
    root = User.objects.get(userid="root@pam")
    for storeid in ("dk-src", "dk-dst"):
        services.create_storage(
            storeid, {"path": str(tmp_path_factory.mktemp(storeid)), "content": "images"}, actor=root
        )
    for role, privileges in (("dk-disk-role", ["VM.Config.Disk"]), ("dk-space-role", ["Datastore.AllocateSpace"])):
        if not Role.objects.filter(roleid=role).exists():
            authz_services.save_role(role, privileges, actor=root, create=True)
    for userid in GRANTS:
        if not User.objects.filter(userid=userid).exists():
            authz_services.add_user(userid, actor=root, password=PASSWORD)
    return {userid: login_enforcing_csrf(userid, PASSWORD) for userid in GRANTS}


def grant(root: User) -> None:
    """The matrix's ACLs afresh (a destroyed VM takes its ACL entries along)."""
    for userid, grants in GRANTS.items():
        for entry in ACLEntry.objects.filter(ugid=userid):
            entry.delete()
        for path, role in grants:
            authz_services.modify_acl(root, path, [role], users=[userid])


def fresh_vm() -> None:
    """VM 7830: scsi0 and scsi1 (raw) and unused0 on dk-src, all its own volumes, stopped."""
    root = User.objects.get(userid="root@pam")
    if VM.objects.filter(vmid=VMID).exists():
        services.destroy_vm(VM.objects.get(vmid=VMID), actor=root, purge=True)
    config = {"name": "dk", "scsi0": "dk-src:0.004,format=raw", "scsi1": "dk-src:0.004,format=raw"}
    services.create_vm(VMID, config, node=NODE, actor=root)
    spare = volumes.alloc_volume(Storage.objects.get(storeid="dk-src"), VMID, MIB, fmt="raw")
    services.update_vm_config(VM.objects.get(vmid=VMID), set_={"unused0": spare}, actor=root)
    grant(root)


def files() -> list[str]:
    return sorted(str(p) for s in ("dk-src", "dk-dst") for p in Path(Storage.objects.get(storeid=s).path).rglob("*"))


def call(clients, userid: str, method: str, path: str, **params: object) -> tuple[int, dict]:
    client, csrf = clients[userid] if userid else (Client(), "")
    url = f"{API}/nodes/{NODE}/qemu/{VMID}/{path}"
    if method == "put":
        body = "&".join(f"{k}={v}" for k, v in params.items()).replace("+", "%2B")
        response = client.put(
            url, body, content_type="application/x-www-form-urlencoded", HTTP_CSRFPREVENTIONTOKEN=csrf
        )
    else:
        response = client.post(url, params, HTTP_CSRFPREVENTIONTOKEN=csrf)
    return response.status_code, response.json() if response.content else {}


def refused(clients, userid: str, method: str, path: str, message: str, **params: object) -> None:
    before, stored, config = replicator_client.status()["version"], files(), VM.objects.get(vmid=VMID).config
    status, body = call(clients, userid, method, path, **params)
    assert (status, body.get("message", "").strip()) == (403, message), (userid, path, params, body)
    assert replicator_client.status()["version"] == before, "a refused request changed something"
    assert files() == stored and VM.objects.get(vmid=VMID).config == config


CALLS = [
    ("put", "resize", {"disk": "scsi0", "size": "+1M"}),
    ("post", "move_disk", {"disk": "scsi0", "storage": "dk-dst"}),
    ("post", "move-disk", {"disk": "scsi0", "storage": "dk-dst"}),
    ("put", "unlink", {"idlist": "scsi1"}),
]


@pytest.mark.parametrize(("method", "path", "params"), CALLS, ids=[c[1] for c in CALLS])
def test_without_vm_config_disk_on_the_vm_everything_is_refused(clients, method, path, params):
    fresh_vm()
    assert call(clients, "", method, path, **params)[0] == 401
    for userid in ("dk-nobody@pve", "dk-other@pve"):
        refused(clients, userid, method, path, DENIED_VM, **params)


def test_resize_needs_space_on_the_disks_storage_checked_in_its_task(clients):
    fresh_vm()
    volume = f"dk-src:{VMID}/vm-{VMID}-disk-0.raw"
    before = volumes.volume_size(volume)
    for userid in ("dk-disk@pve", "dk-target@pve"):
        status, body = call(clients, userid, "put", "resize", disk="scsi0", size="+1M")
        task = finished_task(body["data"])
        assert (status, task.type) == (200, "resize")
        assert task.exitstatus == "Permission check failed (/storage/dk-src, Datastore.AllocateSpace)"
    assert volumes.volume_size(volume) == before
    status, body = call(clients, "dk-full@pve", "put", "resize", disk="scsi0", size="+1M")
    assert (status, finished_task(body["data"]).exitstatus) == (200, "OK")
    after = volumes.volume_size(volume)
    assert after == before + MIB + (-(before + MIB) % 1024)
    assert VM.objects.get(vmid=VMID).config["scsi0"].endswith(f",size={format_size(after)}")


def test_move_disk_needs_space_on_the_target_and_with_delete_on_the_source(clients):
    fresh_vm()
    denied_dst = "Permission check failed (/storage/dk-dst, Datastore.AllocateSpace)"
    denied_src = "Permission check failed (/storage/dk-src, Datastore.AllocateSpace)"
    refused(clients, "dk-disk@pve", "post", "move_disk", denied_dst, disk="scsi0", storage="dk-dst")
    refused(clients, "dk-target@pve", "post", "move-disk", denied_src, disk="scsi0", storage="dk-dst", delete=1)
    status, body = call(clients, "dk-target@pve", "post", "move_disk", disk="scsi0", storage="dk-dst")
    task = finished_task(body["data"])
    assert (status, task.type, task.exitstatus) == (200, "qmmove", "OK")
    config = VM.objects.get(vmid=VMID).config
    assert config["scsi0"].startswith(f"dk-dst:{VMID}/") and config["unused1"] == f"dk-src:{VMID}/vm-{VMID}-disk-0.raw"
    status, body = call(clients, "dk-full@pve", "post", "move-disk", disk="scsi1", storage="dk-dst", delete=1)
    assert (status, finished_task(body["data"]).exitstatus) == (200, "OK")
    config = VM.objects.get(vmid=VMID).config
    assert config["scsi1"].startswith(f"dk-dst:{VMID}/") and "unused2" not in config
    assert not Path(Storage.objects.get(storeid="dk-src").path, f"images/{VMID}/vm-{VMID}-disk-1.raw").exists()


def test_unlink_needs_space_on_the_storage_of_a_volume_it_frees(clients):
    fresh_vm()
    denied_src = "Permission check failed (/storage/dk-src, Datastore.AllocateSpace)"
    refused(clients, "dk-disk@pve", "put", "unlink", denied_src, idlist="unused0")
    refused(clients, "dk-disk@pve", "put", "unlink", denied_src, idlist="scsi1", force=1)
    assert call(clients, "dk-disk@pve", "put", "unlink", idlist="scsi1")[0] == 200  # detached, kept as unused1
    config = VM.objects.get(vmid=VMID).config
    assert "scsi1" not in config and config["unused1"] == f"dk-src:{VMID}/vm-{VMID}-disk-1.raw"
    assert call(clients, "dk-full@pve", "put", "unlink", idlist="unused0,unused1")[0] == 200
    config = VM.objects.get(vmid=VMID).config
    assert not any(key.startswith("unused") for key in config)
    assert [p.name for p in Path(Storage.objects.get(storeid="dk-src").path, f"images/{VMID}").iterdir()] == [
        f"vm-{VMID}-disk-0.raw"
    ]


def test_resize_skiplock_is_root_only_and_refused_before_the_task(clients):
    fresh_vm()
    before = replicator_client.status()["version"]
    status, body = call(clients, "dk-full@pve", "put", "resize", disk="scsi0", size="+1M", skiplock=1)
    assert (status, body["errors"]) == (400, {"skiplock": "Only root may use this option."}), body
    assert replicator_client.status()["version"] == before
