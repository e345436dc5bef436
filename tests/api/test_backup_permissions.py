"""``POST /nodes/{node}/vzdump`` with real ACLs, a real worker and a real storage; the ``vzdump`` CLI.

Proxmox's rules: VM.Backup on each VM backed up and Datastore.AllocateSpace on the target
storage, checked before the task; ``tmpdir``, ``dumpdir``, ``script`` are root's. A refusal
writes nothing (no archive); a permitted call answers a ``vzdump`` UPID whose task writes the
archive, which the caller then sees in the storage's content list.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from authz import services as authz_services
from authz.models import ACLEntry, Role, User
from cluster.models import ClusterLogEntry
from tests.api_client import finished_task, login_enforcing_csrf
from vms import services
from vms.models import VM, Storage
from vms.services.backup import vzdump
from vms.storage import volume_path

pytestmark = [pytest.mark.usefixtures("replicator", "celery_worker")]
API = "/api2/json"
NODE = "testnode"
PASSWORD = "bk-password"
VMID, OTHER, NEW = 7850, 7851, 7852
GRANTS = {
    "bk-nobody@pve": [],
    "bk-vm@pve": [(f"/vms/{VMID}", "bk-backup-role")],
    "bk-space@pve": [("/storage/bk-api", "bk-space-role"), (f"/vms/{OTHER}", "bk-backup-role")],
    "bk-full@pve": [(f"/vms/{VMID}", "bk-backup-role"), ("/storage/bk-api", "bk-space-role")],
    "bk-restorer@pve": [(f"/vms/{NEW}", "bk-alloc-role"), (f"/vms/{VMID}", "bk-backup-role")],
    "bk-restorer2@pve": [(f"/vms/{NEW}", "bk-alloc-role"), (f"/vms/{VMID}", "bk-backup-role"),
                         ("/storage/bk-api", "bk-space-role")],
}  # fmt: skip


@pytest.fixture(scope="module")
def clients(tmp_path_factory) -> dict[str, tuple[Client, str]]:
    root = User.objects.get(userid="root@pam")
    path = str(tmp_path_factory.mktemp("bk-api"))
    services.create_storage("bk-api", {"path": path, "content": "images,backup"}, actor=root)
    roles = (("bk-backup-role", ["VM.Backup"]), ("bk-space-role", ["Datastore.AllocateSpace"]))
    for role, privileges in (*roles, ("bk-alloc-role", ["VM.Allocate"])):
        if not Role.objects.filter(roleid=role).exists():
            authz_services.save_role(role, privileges, actor=root, create=True)
    for userid in GRANTS:
        if not User.objects.filter(userid=userid).exists():
            authz_services.add_user(userid, actor=root, password=PASSWORD)
    for vmid in (VMID, OTHER):
        if not VM.objects.filter(vmid=vmid).exists():
            services.create_vm(vmid, {"name": f"bk{vmid}", "scsi0": "bk-api:0.004"}, node=NODE, actor=root)
    for userid, grants in GRANTS.items():
        for entry in ACLEntry.objects.filter(ugid=userid):
            entry.delete()
        for acl_path, role in grants:
            authz_services.modify_acl(root, acl_path, [role], users=[userid])
    yield {userid: login_enforcing_csrf(userid, PASSWORD) for userid in GRANTS}
    for vm in VM.objects.filter(vmid__in=(VMID, OTHER, NEW)):
        services.destroy_vm(vm, actor=root)


def dumps() -> list[str]:
    directory = Path(Storage.objects.get(storeid="bk-api").path) / "dump"
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def post(clients, userid: str, **params: object) -> tuple[int, dict]:
    client, csrf = clients[userid]
    response = client.post(f"{API}/nodes/{NODE}/vzdump", params, HTTP_CSRFPREVENTIONTOKEN=csrf)
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("userid", "params", "status", "message"),
    [
        ("bk-nobody@pve", {"vmid": VMID}, 403, "Permission check failed (/storage/bk-api, Datastore.AllocateSpace)"),
        ("bk-vm@pve", {"vmid": VMID}, 403, "Permission check failed (/storage/bk-api, Datastore.AllocateSpace)"),
        ("bk-space@pve", {"vmid": VMID}, 403, f"Permission check failed (/vms/{VMID}, VM.Backup)"),
        # --all: refused on the first VM without VM.Backup (other modules' VMs may share the node)
        ("bk-space@pve", {"all": 1}, 403, re.compile(rf"Permission check failed \(/vms/(?!{OTHER}\b)\d+, VM.Backup\)")),
        ("bk-full@pve", {"vmid": VMID, "tmpdir": "/tmp"}, 400, "Parameter verification failed."),
        ("bk-full@pve", {"vmid": VMID, "mode": "fast"}, 400, "Parameter verification failed."),
        (
            "bk-full@pve",
            {"vmid": VMID, "prune-backups": "keep-all=1,keep-last=2"},
            400,
            "Parameter verification failed.",
        ),
    ],
)
def test_refusals_write_nothing(clients, userid, params, status, message):
    before = dumps()
    answer, body = post(clients, userid, storage="bk-api", **params)
    text = body.get("message", "").strip()
    assert answer == status, body
    assert message.fullmatch(text) if isinstance(message, re.Pattern) else text == message, body
    assert dumps() == before


def test_a_permitted_backup_runs_on_the_worker_and_is_listed(clients):
    status, body = post(clients, "bk-full@pve", vmid=VMID, storage="bk-api", compress="zstd", remove=0)
    assert status == 200, body
    task = finished_task(body["data"], timeout=120)
    assert (task.type, task.vmid, task.exitstatus) == ("vzdump", str(VMID), "OK")
    archives = [name for name in dumps() if name.endswith(".tar.zst")]
    assert len(archives) == 1 and archives[0].startswith(f"vzdump-qemu-{VMID}-")
    client, _ = clients["bk-full@pve"]
    listed = client.get(f"{API}/nodes/{NODE}/storage/bk-api/content", {"content": "backup"}).json()["data"]
    assert [e["volid"] for e in listed] == [f"bk-api:backup/{archives[0]}"]
    assert listed[0]["format"] == "tar.zst" and listed[0]["vmid"] == VMID
    notice = ClusterLogEntry.objects.filter(tag="vzdump", msg__contains=archives[0]).get()  # the notification
    assert (notice.user, notice.msg) == ("bk-full@pve", f"vzdump: VM {VMID} backed up to bk-api:backup/{archives[0]}")
    # The CLI (root@pam) writes the same kind of archive, its task log on stdout.
    lines: list[str] = []

    class Out:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    call_command("vzdump", str(OTHER), "--storage", "bk-api", "--compress", "gzip", stdout=Out())
    assert any(f"Finished Backup of VM {OTHER}" in line for line in lines)
    assert len([n for n in dumps() if n.startswith(f"vzdump-qemu-{OTHER}-") and n.endswith(".tar.gz")]) == 1


def restore_call(clients, userid: str, **params: object) -> tuple[int, dict]:
    client, csrf = clients[userid]
    response = client.post(f"{API}/nodes/{NODE}/qemu", params, HTTP_CSRFPREVENTIONTOKEN=csrf)
    return response.status_code, response.json()


def test_restore_permissions(clients):
    """VM.Allocate on the new VMID (or VM.Backup over an existing VM with force) and access to the archive."""
    root = User.objects.get(userid="root@pam")
    owner = "UPID:testnode:00000001:00000001:00000001:vzdump::root@pam:"
    (volid,) = vzdump({"vmid": str(VMID), "storage": "bk-api"}, owner=owner, log=print, warn=print)
    denied = "Permission check failed ({}, {})"
    for userid, vmid, extra, message in (
        ("bk-nobody@pve", NEW, {}, denied.format(f"/vms/{NEW}", "VM.Allocate")),
        ("bk-full@pve", NEW, {}, denied.format(f"/vms/{NEW}", "VM.Allocate")),
        ("bk-full@pve", VMID, {}, denied.format(f"/vms/{VMID}", "VM.Allocate")),  # over a VM: only with force
        ("bk-restorer@pve", NEW, {}, denied.format("/storage/bk-api", "Datastore.AllocateSpace")),
        (
            "bk-restorer2@pve",
            NEW,
            {"storage": "elsewhere"},
            denied.format("/storage/elsewhere", "Datastore.AllocateSpace"),
        ),
    ):
        status, body = restore_call(clients, userid, vmid=vmid, archive=volid, **extra)
        assert (status, body.get("message", "").strip()) == (403, message), (userid, body)
    # A host path (qmrestore's FILE form) is root@pam's only.
    status, body = restore_call(clients, "bk-restorer2@pve", vmid=NEW, archive=volume_path(volid))
    assert status == 400 and body["errors"]["archive"] == "only root can restore from a file path", body
    assert not VM.objects.filter(vmid=NEW).exists()
    # VM.Backup alone restores over the existing VM with force; it must not be running or protected.
    status, body = restore_call(clients, "bk-full@pve", vmid=VMID, archive=volid, force=1)
    assert status == 200 and finished_task(body["data"]).exitstatus == "OK", body
    assert VM.objects.get(vmid=VMID).lock == ""
    status, body = restore_call(clients, "bk-restorer2@pve", vmid=NEW, archive=volid, unique=1, name="bk-restored")
    task = finished_task(body["data"])
    assert (status, task.type, task.exitstatus) == (200, "qmrestore", "OK")
    restored = VM.objects.get(vmid=NEW)
    assert restored.config["name"] == "bk-restored" and restored.config["scsi0"].startswith(
        f"bk-api:{NEW}/vm-{NEW}-disk-0"
    )
    # qmrestore (root@pam) refuses an existing VMID without --force, by volume id or by file path.
    with pytest.raises(CommandError, match=f"VM {NEW} already exists"):
        call_command("qmrestore", volid, str(NEW))
    with pytest.raises(CommandError, match=f"VM {NEW} already exists"):
        call_command("qmrestore", volume_path(volid), str(NEW))
    services.destroy_vm(restored, actor=root)


def test_extractconfig_needs_access_to_the_backup(clients):
    owner = "UPID:testnode:00000001:00000001:00000001:vzdump::root@pam:"
    (volid,) = vzdump({"vmid": str(OTHER), "storage": "bk-api"}, owner=owner, log=print, warn=print)
    url = f"{API}/nodes/{NODE}/vzdump/extractconfig"
    client, _ = clients["bk-full@pve"]  # VM.Backup on VMID only
    response = client.get(url, {"volume": volid})
    assert response.status_code == 403, response.json()
    client, _ = clients["bk-space@pve"]  # AllocateSpace on the storage and VM.Backup on OTHER
    text = client.get(url, {"volume": volid}).json()["data"]
    assert f"name: bk{OTHER}" in text and "#qmdump#map:scsi0:drive-scsi0:bk-api:raw:" in text
