"""The VM and storage admin pages with real ACLs: the same services, rules and audit as the API.

Change form matrix: anonymous (to the login page), no privilege, the privilege on another VM,
every VM.Config.* privilege but the one needed, the exact privilege, root. Refusals change nothing.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from django.test import Client

from authz import services as access_services
from authz.models import ACLEntry, Pool, Role, User
from cluster.models import ClusterLogEntry
from replicator import client as replicator_client
from vms.config import format_config
from vms.models import VM, Storage
from vms.storage.volumes import free_volume, volume_info

pytestmark = [pytest.mark.usefixtures("replicator"), pytest.mark.postgres_too]
# Any one of them opens the config; each key still needs its own (Proxmox's $vm_config_perm_list).
CONFIG_PRIVILEGES = (
    "VM.Config.Disk",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.HWType",
    "VM.Config.Options",
    "VM.Config.Cloudinit",
)
PASSWORD = "vmadmin-password"
HOLDER, OTHER, NOBODY, ALMOST, ADMIN = (f"va-{name}@pve" for name in ("holder", "other", "nobody", "almost", "admin"))
VMID, OTHER_VMID = 7650, 7651
BASE = {"name": "va7650", "memory": "512", "cores": "1"}


def role(privileges: list[str]) -> str:
    roleid = "va-" + hashlib.sha1(",".join(sorted(privileges)).encode()).hexdigest()[:12]
    if not Role.objects.filter(roleid=roleid).exists():
        access_services.save_role(roleid, privileges, actor=User.objects.get(userid="root@pam"), create=True)
    return roleid


def admin_client(username: str, password: str = PASSWORD) -> Client:
    client = Client()
    response = client.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"})
    assert response.status_code == 302, response.content[:300]
    return client


def root_client() -> Client:
    return admin_client("root@pam", "test-root-password")


def reset_vm(vmid: int = VMID, **extra: str) -> VM:
    vm = VM.objects.filter(vmid=vmid).first() or VM(vmid=vmid, node_id="testnode")
    vm.config, vm.lock, vm.lock_owner, vm.pool_id = {**BASE, **extra}, "", "", None
    vm.save()
    return vm


def state(vmid: int = VMID) -> tuple[dict, str | None, str, int]:
    vm = VM.objects.get(vmid=vmid)
    return vm.config, vm.pool_id, vm.lock, vm.version


def change(client: Client, text: str, *, vmid: int = VMID, pool: str = "", **extra: str):
    return client.post(f"/admin/vms/vm/{vmid}/change/", {"pool": pool, "config_text": text, **extra})


@pytest.fixture(scope="module")
def root() -> User:
    root_user = User.objects.get(userid="root@pam")
    for userid in (HOLDER, OTHER, NOBODY, ALMOST, ADMIN):
        if not User.objects.filter(userid=userid).exists():
            access_services.add_user(userid, actor=root_user, password=PASSWORD)
    for poolid in ("va-a", "va-b"):
        if not Pool.objects.filter(poolid=poolid).exists():
            Pool(poolid=poolid).save()
    reset_vm(OTHER_VMID)
    return User.objects.get(userid="root@pam")


def reset_acls(root: User) -> None:
    for entry in ACLEntry.objects.filter(ugid__startswith="va-"):
        entry.delete()
    access_services.modify_acl(root, "/", ["Administrator"], users=[ADMIN])


def grant(root: User, userid: str, path: str, privileges: list[str]) -> None:
    access_services.modify_acl(root, path, [role(privileges)], users=[userid])


def test_change_form_checks_exactly_the_changed_keys(root):
    reset_vm()
    reset_acls(root)
    grant(root, OTHER, f"/vms/{OTHER_VMID}", ["VM.Config.Memory"])
    grant(root, ALMOST, f"/vms/{VMID}", [p for p in CONFIG_PRIVILEGES if p != "VM.Config.Memory"])
    grant(root, HOLDER, f"/vms/{VMID}", ["VM.Config.Memory"])
    text = format_config({**BASE, "memory": "1024"})
    before = state()
    anonymous = change(Client(), text)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    assert change(admin_client(NOBODY), text).status_code == 403
    assert change(admin_client(OTHER), text).status_code in (302, 403, 404)  # not even listed
    almost = change(admin_client(ALMOST), text)
    assert almost.status_code == 200 and b"Permission check failed (/vms/7650, VM.Config.Memory)" in almost.content
    assert state() == before, "a refused save changed the VM"

    holder = admin_client(HOLDER)
    assert change(holder, format_config({**BASE, "cores": "4"})).status_code == 200  # CPU: not held
    assert state() == before
    saved = change(holder, text)  # only memory changed: VM.Config.Memory is all it takes
    assert saved.status_code == 302, saved.content[:2000]
    vm = VM.objects.get(vmid=VMID)
    assert vm.config == {**BASE, "memory": "1024"}
    entry = ClusterLogEntry.objects.get(version=vm.version)  # the change and its entry: one change set
    assert entry.user == HOLDER and entry.msg == f"update VM {VMID}: -memory 1024"
    assert change(root_client(), format_config({**BASE, "cores": "2"})).status_code == 302
    assert VM.objects.get(vmid=VMID).config["cores"] == "2"


def test_root_only_keys_and_the_lock_in_the_admin(root):
    reset_vm(args="-no-hpet")
    reset_acls(root)
    admin = admin_client(ADMIN)  # Administrator on /, not root@pam
    before = state()
    for text, message in (
        (format_config({**BASE, "args": "-S"}), b"only root can set &#x27;args&#x27; config"),
        (format_config(BASE), b"only root can set &#x27;args&#x27; config"),  # removing args
        (format_config({**BASE, "args": "-no-hpet", "serial0": "/dev/ttyS0"}), b"for real devices"),
        (format_config({**BASE, "args": "-no-hpet", "lock": "backup"}), b"qm unlock"),
    ):
        refused = change(admin, text)
        assert refused.status_code == 200 and message in refused.content, refused.content[-3000:]
    # lock and lock_owner are not form fields: posting them changes nothing
    assert change(admin, format_config({**BASE, "args": "-no-hpet"}), lock="backup").status_code == 302
    assert state()[:3] == before[:3]
    vm = VM.objects.get(vmid=VMID)
    vm.lock, vm.lock_owner = "backup", "UPID:testnode:00001234:00000001:65A1B2C3:vzdump:7650:root@pam:"
    vm.save(update_fields=["lock", "lock_owner"])
    page = root_client().get(f"/admin/vms/vm/{VMID}/change/").content
    assert b'name="lock"' not in page and b'name="lock_owner"' not in page and b"UPID:testnode:" in page
    locked = change(root_client(), format_config({**BASE, "args": "-no-hpet", "memory": "2048"}))
    assert locked.status_code == 200 and b"VM 7650 is locked (backup)" in locked.content
    assert VM.objects.get(vmid=VMID).config["memory"] == "512"


def test_a_nic_added_in_the_admin_gets_a_mac_and_a_disk_a_volume(root):
    reset_vm()
    saved = change(root_client(), format_config({**BASE, "net0": "virtio,bridge=vmbr0", "scsi0": "local:2"}))
    assert saved.status_code == 302, saved.content[-2000:]
    config = VM.objects.get(vmid=VMID).config
    assert re.fullmatch(r"virtio=BC:24:11(:[0-9A-F]{2}){3},bridge=vmbr0", config["net0"])
    assert config["scsi0"] == "local:7650/vm-7650-disk-0.raw,size=2G"  # a real volume, allocated on save
    assert volume_info("local:7650/vm-7650-disk-0.raw")["size"] == 2 * 1024**3
    free_volume("local:7650/vm-7650-disk-0.raw")


def test_moving_a_vm_between_pools_needs_pool_allocate(root):
    reset_vm()
    reset_acls(root)
    grant(root, HOLDER, f"/vms/{VMID}", ["VM.Allocate", "VM.Config.Options"])
    holder = admin_client(HOLDER)
    text = format_config(BASE)
    before = state()
    refused = change(holder, text, pool="va-a")
    assert refused.status_code == 200 and b"Permission check failed (/pool/va-a, Pool.Allocate)" in refused.content
    assert state() == before
    grant(root, HOLDER, "/pool/va-a", ["Pool.Allocate"])
    assert change(holder, text, pool="va-a").status_code == 302
    vm = VM.objects.get(vmid=VMID)
    assert vm.pool_id == "va-a"
    assert ClusterLogEntry.objects.get(version=vm.version).msg == f"update VM {VMID}: -pool va-a"
    moved = change(holder, text, pool="va-b")  # out of va-a into va-b: Pool.Allocate on both
    assert moved.status_code == 200 and b"(/pool/va-b, Pool.Allocate)" in moved.content
    assert VM.objects.get(vmid=VMID).pool_id == "va-a"


def test_add_and_delete_through_the_services_with_audit(root):
    for vmid in (7660, 7661, 7662):
        VM.objects.filter(vmid=vmid).delete()
    reset_acls(root)
    grant(root, HOLDER, "/vms", ["VM.Allocate", "VM.Config.Memory"])
    holder = admin_client(HOLDER)
    refused = holder.post(
        "/admin/vms/vm/add/", {"vmid": "7660", "node": "testnode", "pool": "", "config_text": "memory: 256\nargs: -S\n"}
    )
    assert refused.status_code == 200 and b"only root can set" in refused.content
    assert not VM.objects.filter(vmid=7660).exists()
    added = holder.post(
        "/admin/vms/vm/add/", {"vmid": "7660", "node": "testnode", "pool": "", "config_text": "memory: 256\n"}
    )
    assert added.status_code == 302
    vm = VM.objects.get(vmid=7660)
    assert vm.config["memory"] == "256" and vm.config["smbios1"].startswith("uuid=")
    assert ClusterLogEntry.objects.get(version=vm.version).user == HOLDER

    protected = reset_vm(7661, protection="1")
    denied = holder.post("/admin/vms/vm/7661/delete/", {"post": "yes"}, follow=True)
    assert b"protection mode enabled" in denied.content
    assert VM.objects.get(vmid=7661).version == protected.version
    reset_vm(7661)
    reset_vm(7662)
    root = root_client()
    version = replicator_client.status()["version"]
    response = root.post(
        "/admin/vms/vm/", {"action": "delete_selected", "_selected_action": ["7661", "7662"], "post": "yes"}
    )
    assert response.status_code == 302
    assert not VM.objects.filter(vmid__in=[7661, 7662]).exists()
    # the deletions and their entries are one change set: nothing written before or besides it
    assert replicator_client.status()["version"] == version + 1
    entries = ClusterLogEntry.objects.filter(msg__in=["VM 7661 destroyed", "VM 7662 destroyed"], version=version + 1)
    assert sorted(entries.values_list("user", flat=True)) == ["root@pam", "root@pam"]


def test_storages_through_the_service_validated_and_on_the_collection_path(root):
    Storage.objects.filter(storeid="va-store").delete()
    reset_acls(root)
    grant(root, HOLDER, "/storage/local", ["Datastore.Allocate"])  # on one storage only
    holder = admin_client(HOLDER)
    form = {"path": "/srv/va", "content": "images", "nodes": "", "pool": ""}
    assert holder.post("/admin/vms/storage/add/", {"storeid": "va-store", "type": "dir", **form}).status_code == 403
    local = Storage.objects.get(storeid="local")
    assert holder.post("/admin/vms/storage/local/change/", {**form, "path": local.path}).status_code == 403
    assert Storage.objects.get(storeid="local").version == local.version
    grant(root, HOLDER, "/storage", ["Datastore.Allocate"])
    evil = holder.post(
        "/admin/vms/storage/add/",
        {"storeid": "va-store", "type": "dir", **form, "path": "/srv/va\n\tcontent images,iso\ndir: evil"},
    )
    assert evil.status_code == 200 and b"control" in evil.content
    for bad in ({"path": "/srv/../etc"}, {"content": "images,bogus"}, {"nodes": "node 1"}):
        response = holder.post("/admin/vms/storage/add/", {"storeid": "va-store", "type": "dir", **form, **bad})
        assert response.status_code == 200, bad
    assert not Storage.objects.filter(storeid="va-store").exists()
    added = holder.post("/admin/vms/storage/add/", {"storeid": "va-store", "type": "dir", **form})
    assert added.status_code == 302, re.findall(r"errorlist[^>]*>(.*?)</ul", added.content.decode(), re.S)
    storage = Storage.objects.get(storeid="va-store")
    entry = ClusterLogEntry.objects.get(version=storage.version)
    assert entry.user == HOLDER and entry.msg.startswith("create storage 'va-store': -type dir -path /srv/va")
    pooled = holder.post("/admin/vms/storage/va-store/change/", {**form, "pool": "va-a"})
    assert pooled.status_code == 200 and b"(/pool/va-a, Pool.Allocate)" in pooled.content
    assert Storage.objects.get(storeid="va-store").pool_id is None
    deleted = holder.post("/admin/vms/storage/va-store/delete/", {"post": "yes"})
    assert deleted.status_code == 302 and not Storage.objects.filter(storeid="va-store").exists()
    assert ClusterLogEntry.objects.filter(msg="delete storage 'va-store'", user=HOLDER).exists()


def test_a_removed_vm_or_storage_takes_its_grants_along(root):
    """Proxmox's remove_vm_access: a VMID or storage id used again never inherits the old object's ACL entries."""
    from vms import services

    VM.objects.filter(vmid=7663).delete()
    Storage.objects.filter(storeid="va-gone").delete()
    reset_acls(root)
    vm = reset_vm(7663)
    storage = services.create_storage("va-gone", {"type": "dir", "path": "/srv/va-gone"}, actor=root)
    grant(root, HOLDER, "/vms/7663", ["VM.Audit"])
    grant(root, HOLDER, "/storage/va-gone", ["Datastore.Audit"])
    grant(root, OTHER, "/vms/7664", ["VM.Audit"])  # another object's grant stays
    services.destroy_vm(VM.objects.get(vmid=vm.vmid), actor=root)
    services.delete_storage(Storage.objects.get(storeid=storage.storeid), actor=root)
    assert not ACLEntry.objects.filter(path__in=["/vms/7663", "/storage/va-gone"]).exists()
    assert ACLEntry.objects.filter(path="/vms/7664", ugid=OTHER).exists()
    assert not admin_client(HOLDER).get("/admin/vms/vm/").content.count(b"7663")
