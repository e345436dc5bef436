"""VM config API with real ACLs: each key its own privilege, root@pam-only keys, audit in the change set.

For every key class: anonymous 401; no privilege 403; the privilege on another VM 403; every other
VM.Config.* privilege but the one needed 403; the exact privileges allowed; root allowed. Every
refusal leaves config, digest and version as they were.
"""

from __future__ import annotations

import hashlib

import pytest
from django.test import Client

from authz import services
from authz.models import ACLEntry, APIToken, Pool, Role, User
from cluster.models import ClusterLogEntry
from vms.models import VM

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
API = "/api2/json"
NODE = "testnode"
PASSWORD = "vmcfg-password"
HOLDER, OTHER, NOBODY, ALMOST, ADMIN = (f"vc-{name}@pve" for name in ("holder", "other", "nobody", "almost", "admin"))
VMID, OTHER_VMID = 7600, 7601
BASE = {"name": "vc7600", "memory": "512", "cores": "1", "description": "keep", "args": "-no-hpet"}
FORM = "application/x-www-form-urlencoded"


def role(privileges: list[str]) -> str:
    """A custom role holding exactly ``privileges``."""
    roleid = "vc-" + hashlib.sha1(",".join(sorted(privileges)).encode()).hexdigest()[:12]
    if not Role.objects.filter(roleid=roleid).exists():
        services.save_role(roleid, privileges, actor=User.objects.get(userid="root@pam"), create=True)
    return roleid


def login(userid: str, password: str = PASSWORD) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    data = client.post(f"{API}/access/ticket", {"username": userid, "password": password}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client, data["CSRFPreventionToken"]


def reset_vm(vmid: int = VMID, **extra: str) -> VM:
    vm = VM.objects.filter(vmid=vmid).first() or VM(vmid=vmid, node_id=NODE)
    vm.config, vm.lock, vm.lock_owner = {**BASE, **extra}, "", ""
    vm.save()
    return vm


def state(vmid: int = VMID) -> tuple[dict, str, int]:
    vm = VM.objects.get(vmid=vmid)
    return vm.config, vm.digest, vm.version


@pytest.fixture(scope="module")
def root() -> User:
    root_user = User.objects.get(userid="root@pam")
    for userid in (HOLDER, OTHER, NOBODY, ALMOST, ADMIN):
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=root_user, password=PASSWORD)
    if not Pool.objects.filter(poolid="vcpool").exists():
        Pool(poolid="vcpool").save()
    reset_vm(OTHER_VMID)
    return User.objects.get(userid="root@pam")


def reset_acls(root: User) -> None:
    for entry in ACLEntry.objects.filter(ugid__startswith="vc-"):
        entry.delete()
    services.modify_acl(root, "/", ["Administrator"], users=[ADMIN])


def grant(root: User, userid: str, grants: list[tuple[str, list[str]]], *, vmid: int = VMID) -> None:
    for path, privileges in grants:
        services.modify_acl(root, path.format(vmid=vmid), [role(privileges)], users=[userid])


def put(client: Client, csrf: str, body: str, vmid: int = VMID):
    return client.put(f"{API}/nodes/{NODE}/qemu/{vmid}/config", body, content_type=FORM, HTTP_CSRFPREVENTIONTOKEN=csrf)


# body, VM privileges on /vms/<vmid>, grants elsewhere (storage, bridges), what the config holds after
CASES = [
    ("cores=3", ["VM.Config.CPU"], [], {"cores": "3"}),
    ("memory=768", ["VM.Config.Memory"], [], {"memory": "768"}),
    ("vga=qxl", ["VM.Config.HWType"], [], {"vga": "qxl"}),
    ("name=renamed", ["VM.Config.Options"], [], {"name": "renamed"}),
    ("delete=description", ["VM.Config.Options"], [], {"description": None}),
    ("boot=order%3Dscsi0", ["VM.Config.Disk"], [], {"boot": "order=scsi0"}),
    ("ide2=none%2Cmedia%3Dcdrom", ["VM.Config.CDROM"], [], {"ide2": "none,media=cdrom"}),
    ("serial1=socket", ["VM.Config.HWType"], [], {"serial1": "socket"}),
    ("usb1=spice", ["VM.Config.HWType"], [], {"usb1": "spice"}),
    (
        "net1=virtio%2Cbridge%3Dvmbr9",
        ["VM.Config.Network"],
        [("/sdn/zones/localnetwork/vmbr9", ["SDN.Use"])],
        {"net1": "virtio=BC:24:11:"},
    ),
    (
        "scsi1=local%3A1",
        ["VM.Config.Disk"],
        [("/storage/local", ["Datastore.AllocateSpace"])],
        {"scsi1": "local:7600/vm-7600-disk-0.raw,size=1G"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_key_needs_its_own_privilege(root, case):
    body, vm_privileges, elsewhere, expected = case
    reset_vm()
    reset_acls(root)
    grant(root, OTHER, [("/vms/{vmid}", vm_privileges), *elsewhere], vmid=OTHER_VMID)
    others = [p for p in CONFIG_PRIVILEGES if p not in vm_privileges]
    grant(root, ALMOST, [("/vms/{vmid}", others), *elsewhere])
    grant(root, HOLDER, [("/vms/{vmid}", vm_privileges)])
    before = state()
    assert put(Client(), "", body).status_code == 401
    for userid in (NOBODY, OTHER, ALMOST):
        denied = put(*login(userid), body)
        assert denied.status_code == 403, (userid, denied.content)
        assert denied.json()["message"].startswith("Permission check failed")
    holder = login(HOLDER)
    if elsewhere:  # the VM privilege alone does not open the storage or the bridge
        assert put(*holder, body).status_code == 403
        grant(root, HOLDER, elsewhere)
    assert state() == before, "a refused request changed the VM"

    allowed = put(*holder, body)
    assert allowed.status_code == 200, allowed.content
    vm = VM.objects.get(vmid=VMID)
    for key, value in expected.items():
        if value is not None and value.endswith(":"):  # a generated MAC follows
            assert vm.config[key].startswith(value)
        else:
            assert vm.config.get(key) == value
    entry = ClusterLogEntry.objects.filter(msg__startswith=f"update VM {VMID}:").order_by("-version").first()
    assert entry.user == HOLDER and entry.version == vm.version  # audited in the change set of the change
    reset_vm()
    assert put(*login("root@pam", "test-root-password"), body).status_code == 200


ROOT_ONLY = [
    ("args=-S", "only root can set 'args' config"),
    ("delete=args", "only root can set 'args' config"),
    ("hookscript=local%3Asnippets%2Fhook.pl", "only root can set 'hookscript' config"),
    ("parent=snap1", "only root can set 'parent' config"),
    ("vmgenid=1", "only root can set 'vmgenid' config"),
    ("serial2=%2Fdev%2FttyS0", "only root can set 'serial2' config for real devices"),
    ("usb2=host%3D046d%3Ac52b", "only root can set 'usb2' config for real devices"),
    ("hostpci0=0000%3A01%3A00.0", "only root can set 'hostpci0' config for non-mapped devices"),
    ("scsi2=%2Fdev%2Fsdb", "Only root can pass arbitrary filesystem paths."),
]


@pytest.fixture(scope="module")
def root_token(root) -> str:
    """root@pam's own token without privilege separation: all privileges, but not root@pam."""
    if not APIToken.objects.filter(tokenid="root@pam!vc").exists():
        _token, secret = services.add_token("root@pam", "vc", actor=root, privsep=False)
        root_token.secret = secret  # type: ignore[attr-defined]
    return f"PVEAPIToken=root@pam!vc={root_token.secret}"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("body", "message"), ROOT_ONLY, ids=[c[0] for c in ROOT_ONLY])
def test_host_reaching_keys_are_root_at_pam_only(root, root_token, body, message):
    reset_vm()
    reset_acls(root)
    before = state()
    admin = put(*login(ADMIN), body)  # Administrator on /: every privilege, still not root@pam
    assert admin.status_code == 403 and admin.json()["message"].strip() == message
    token = Client().put(
        f"{API}/nodes/{NODE}/qemu/{VMID}/config", body, content_type=FORM, HTTP_AUTHORIZATION=root_token
    )
    assert token.status_code == 403 and token.json()["message"].strip() == message
    assert state() == before
    allowed = put(*login("root@pam", "test-root-password"), body)
    assert allowed.status_code == 200, allowed.content


def test_skiplock_is_root_only_and_the_lock_is_no_config_key(root):
    vm = reset_vm()
    vm.lock = "backup"
    vm.save(update_fields=["lock"])
    reset_acls(root)
    before = state()
    admin = login(ADMIN)
    refused = put(*admin, "memory=640&skiplock=1")
    assert refused.status_code == 400 and refused.json()["errors"] == {"skiplock": "Only root may use this option."}
    locked = put(*admin, "memory=640")
    assert locked.status_code == 500 and "locked (backup)" in locked.json()["message"]
    root_client = login("root@pam", "test-root-password")
    for body in ("lock=migrate", "delete=lock", "lock=backup&skiplock=1"):
        response = put(*root_client, body)
        assert response.status_code == 400 and "qm unlock" in response.json()["errors"]["lock"], body
    assert state() == before
    assert put(*root_client, "memory=640&skiplock=1").status_code == 200
    assert VM.objects.get(vmid=VMID).lock == "backup"


def test_a_token_is_named_in_the_cluster_log(root):
    reset_vm()
    reset_acls(root)
    grant(root, HOLDER, [("/vms/{vmid}", ["VM.Config.Memory"])])
    tokenid = f"{HOLDER}!ci"
    if APIToken.objects.filter(tokenid=tokenid).exists():
        services.delete_token(tokenid, actor=root)
    _token, secret = services.add_token(HOLDER, "ci", actor=root, privsep=True)
    services.modify_acl(root, f"/vms/{VMID}", [role(["VM.Config.Memory"])], tokens=[tokenid])
    header = {"HTTP_AUTHORIZATION": f"PVEAPIToken={tokenid}={secret}"}
    response = Client().put(f"{API}/nodes/{NODE}/qemu/{VMID}/config", "memory=1000", content_type=FORM, **header)
    assert response.status_code == 200, response.content
    vm = VM.objects.get(vmid=VMID)
    entry = ClusterLogEntry.objects.get(version=vm.version)
    assert entry.user == tokenid and entry.msg == f"update VM {VMID}: -memory 1000"


def post_create(client: Client, csrf: str, body: str):
    return client.post(f"{API}/nodes/{NODE}/qemu", body, content_type=FORM, HTTP_CSRFPREVENTIONTOKEN=csrf)


def test_create_needs_allocate_each_key_storage_bridge_and_pool(root):
    for vmid in (7610, 7611, 7612):
        VM.objects.filter(vmid=vmid).delete()
    reset_acls(root)
    body = "vmid=7610&memory=512&net0=virtio%2Cbridge%3Dvmbr0&scsi0=local%3A1"
    grant(root, HOLDER, [("/vms/7610", ["VM.Allocate"])])
    grant(root, OTHER, [("/vms/7601", ["VM.Allocate", "VM.Config.Memory", "VM.Config.Network", "VM.Config.Disk"])])
    assert post_create(Client(), "", body).status_code == 401
    for userid in (NOBODY, OTHER, HOLDER):  # HOLDER: VM.Allocate alone
        assert post_create(*login(userid), body).status_code == 403, userid
    grant(root, HOLDER, [("/vms/7610", ["VM.Config.Memory", "VM.Config.Network", "VM.Config.Disk"])])
    assert post_create(*login(HOLDER), body).status_code == 403  # no SDN.Use, no space on local
    grant(root, HOLDER, [("/sdn/zones/localnetwork/vmbr0", ["SDN.Use"])])
    assert post_create(*login(HOLDER), body).status_code == 403  # no space on local
    assert post_create(*login(ADMIN), "vmid=7610&args=-S").status_code == 403
    assert not VM.objects.filter(vmid=7610).exists()
    assert not ClusterLogEntry.objects.filter(msg__startswith="VM 7610 created").exists()
    grant(root, HOLDER, [("/storage/local", ["Datastore.AllocateSpace"])])
    assert post_create(*login(HOLDER), body).status_code == 200
    vm = VM.objects.get(vmid=7610)
    assert vm.config["scsi0"] == "local:7610/vm-7610-disk-0.raw,size=1G" and vm.config["net0"].startswith(
        "virtio=BC:24:11:"
    )
    assert ClusterLogEntry.objects.get(version=vm.version).user == HOLDER

    # into a pool: VM.Allocate on the VMID takes Pool.Allocate on the pool too; VM.Allocate on the pool suffices
    grant(root, HOLDER, [("/vms/7611", ["VM.Allocate"])])
    assert post_create(*login(HOLDER), "vmid=7611&pool=vcpool").status_code == 403
    assert not VM.objects.filter(vmid=7611).exists()
    grant(root, HOLDER, [("/pool/vcpool", ["Pool.Allocate"])])
    assert post_create(*login(HOLDER), "vmid=7611&pool=vcpool").status_code == 200
    assert VM.objects.get(vmid=7611).pool_id == "vcpool"
    grant(root, OTHER, [("/pool/vcpool", ["VM.Allocate"])])
    assert post_create(*login(OTHER), "vmid=7612&pool=vcpool").status_code == 200
    assert VM.objects.get(vmid=7612).pool_id == "vcpool"


def test_destroy_skiplock_is_root_only_and_protection_holds(root):
    reset_acls(root)
    vm = reset_vm(7620, protection="1")
    admin = login(ADMIN)
    delete = admin[0].delete(f"{API}/nodes/{NODE}/qemu/7620", HTTP_CSRFPREVENTIONTOKEN=admin[1])
    assert delete.status_code == 500 and "protection mode enabled" in delete.json()["message"]
    vm.config.pop("protection")
    vm.lock = "backup"
    vm.save()
    before = state(7620)
    skip = admin[0].delete(f"{API}/nodes/{NODE}/qemu/7620?skiplock=1", HTTP_CSRFPREVENTIONTOKEN=admin[1])
    assert skip.status_code == 400 and "skiplock" in skip.json()["errors"]
    assert state(7620) == before
    root_client, csrf = login("root@pam", "test-root-password")
    assert (
        root_client.delete(f"{API}/nodes/{NODE}/qemu/7620?skiplock=1", HTTP_CSRFPREVENTIONTOKEN=csrf).status_code == 200
    )
    assert not VM.objects.filter(vmid=7620).exists()
