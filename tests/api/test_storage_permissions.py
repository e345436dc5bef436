"""Permission matrix of the storage endpoints and the VM disk calls, with real ACLs and real storages.

For each: anonymous 401; no privilege 403; the privilege on another storage (or VM) 403; the
holder allowed; refusals change nothing (neither the cluster version nor a file of the storage).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.test import Client

from authz import services as authz_services
from authz.models import ACLEntry, Role, User
from replicator import client as replicator_client
from tests.query_counts import counting
from vms import services
from vms.models import VM, Storage
from vms.storage import volumes

pytestmark = [pytest.mark.usefixtures("replicator", "redis_broker")]  # download-url queues a task
API = "/api2/json"
NODE = "testnode"
PASSWORD = "sp-password"
USERS = ("sp-nobody@pve", "sp-other@pve", "sp-holder@pve")
VOL = "spm:9400/vm-9400-disk-0.raw"
VOL_URL = VOL.replace("/", "%2F")
DOWNLOAD_ROLE = "sp-download"


def login(userid: str) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    data = client.post(f"{API}/access/ticket", {"username": userid, "password": PASSWORD}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client, data["CSRFPreventionToken"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> User:
    user = User.objects.get(userid="root@pam")
    for userid in USERS:
        if not User.objects.filter(userid=userid).exists():
            authz_services.add_user(userid, actor=user, password=PASSWORD)
    if not Role.objects.filter(roleid=DOWNLOAD_ROLE).exists():
        authz_services.save_role(
            DOWNLOAD_ROLE, ["Datastore.AllocateTemplate", "Sys.AccessNetwork"], actor=user, create=True
        )
    for storeid in ("spm", "spm-other"):
        path = tmp_path_factory.mktemp(storeid)
        services.create_storage(storeid, {"path": str(path), "content": "images,iso"}, actor=user)
    VM(vmid=9400, node_id=NODE, config={"name": "spm", "scsi0": f"{VOL},size=1M"}).save()
    return user


def ensure_volume() -> None:
    storage = Storage.objects.get(storeid="spm")
    if not os.path.exists(f"{storage.path}/images/9400/vm-9400-disk-0.raw"):
        volumes.alloc_volume(storage, 9400, 1024 * 1024, fmt="raw", name="vm-9400-disk-0.raw")


def ensure_store(storeid: str) -> None:
    if not Storage.objects.filter(storeid=storeid).exists():
        services.create_storage(storeid, {"path": f"/srv/{storeid}"}, actor=User.objects.get(userid="root@pam"))


STORAGE = f"{API}/nodes/{NODE}/storage/spm"
# method, path, body, holder's ACLs, the other user's ACLs (same roles elsewhere), prepare
CASES = [
    ("get", "/storage", "", [("/storage/spm", "PVEDatastoreUser")], [], None),
    (
        "get",
        "/storage/spm",
        "",
        [("/storage/spm", "PVEDatastoreAdmin")],
        [("/storage/spm-other", "PVEDatastoreAdmin")],
        None,
    ),
    (
        "post",
        "/storage",
        "storage=spm-new&type=dir&path=/srv/spm-new",
        [("/storage", "PVEDatastoreAdmin")],
        [("/storage/spm", "PVEDatastoreAdmin")],
        None,
    ),
    (
        "put",
        "/storage/spm-other",
        "shared=1",
        [("/storage", "PVEDatastoreAdmin")],
        [("/storage/spm-other", "PVEDatastoreAdmin")],
        None,
    ),
    (
        "delete",
        "/storage/spm-gone",
        "",
        [("/storage", "PVEDatastoreAdmin")],
        [("/storage/spm-gone", "PVEDatastoreAdmin")],
        lambda: ensure_store("spm-gone"),
    ),
    (
        "get",
        f"/nodes/{NODE}/storage/spm/status",
        "",
        [("/storage/spm", "PVEDatastoreUser")],
        [("/storage/spm-other", "PVEDatastoreAdmin")],
        None,
    ),
    (
        "get",
        f"/nodes/{NODE}/storage/spm/content",
        "",
        [("/storage/spm", "PVEAuditor")],
        [("/storage/spm-other", "PVEDatastoreAdmin")],
        None,
    ),
    (
        "post",
        f"/nodes/{NODE}/storage/spm/content",
        "vmid=9401&filename=vm-9401-disk-0.raw&size=1M",
        [("/storage/spm", "PVEDatastoreUser")],
        [("/storage/spm-other", "PVEDatastoreAdmin")],
        None,
    ),
    (
        "get",
        f"/nodes/{NODE}/storage/spm/content/{VOL_URL}",
        "",
        [("/storage/spm", "PVEAuditor"), ("/vms/9400", "PVEVMAdmin")],
        [("/storage/spm", "PVEAuditor")],
        ensure_volume,
    ),
    (
        "delete",
        f"/nodes/{NODE}/storage/spm/content/{VOL_URL}",
        "",
        [("/storage/spm", "PVEDatastoreAdmin")],
        [("/storage/spm", "PVEDatastoreUser"), ("/vms/9400", "PVEVMAdmin")],
        ensure_volume,
    ),
    (
        "post",
        f"/nodes/{NODE}/storage/spm/download-url",
        "url=http://127.0.0.1:9/x.iso&content=iso&filename=x.iso",
        [("/storage/spm", DOWNLOAD_ROLE), ("/nodes/testnode", DOWNLOAD_ROLE)],
        [("/storage/spm", "PVEDatastoreAdmin")],
        None,
    ),
    (
        "put",
        f"/nodes/{NODE}/qemu/9400/unlink",
        "idlist=scsi7",
        [("/vms/9400", "PVEVMAdmin")],
        [("/vms/9401", "PVEVMAdmin")],
        None,
    ),
    (
        "put",
        f"/nodes/{NODE}/qemu/9400/resize",
        "disk=scsi0&size=%2B0",
        [("/vms/9400", "PVEVMAdmin")],
        [("/vms/9401", "PVEVMAdmin")],
        ensure_volume,
    ),
]


def files(storeid: str) -> list[str]:
    base = Storage.objects.get(storeid=storeid).path
    return sorted(str(p) for p in Path(base).rglob("*"))


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_matrix(root, case):
    method, path, body, held, elsewhere, prepare = case
    if prepare:
        prepare()
    for entry in ACLEntry.objects.filter(ugid__in=USERS):
        entry.delete()
    for acl_path, role in held:
        authz_services.modify_acl(root, acl_path, [role], users=["sp-holder@pve"])
    for acl_path, role in elsewhere:
        authz_services.modify_acl(root, acl_path, [role], users=["sp-other@pve"])
    clients = {userid: login(userid) for userid in USERS}

    def call(client: Client, csrf: str = "") -> int:
        kwargs = {"content_type": "application/x-www-form-urlencoded"}
        if csrf:
            kwargs["HTTP_CSRFPREVENTIONTOKEN"] = csrf
        return getattr(client, method)(f"{API}{path}", body, **kwargs).status_code

    before, stored = replicator_client.status()["version"], files("spm")
    assert call(Client()) == 401
    if path != "/storage" or method != "get":  # the list is filtered, never refused
        assert call(*clients["sp-nobody@pve"]) == 403
        assert call(*clients["sp-other@pve"]) == 403
    assert replicator_client.status()["version"] == before, "a refused request changed something"
    assert files("spm") == stored, "a refused request changed the storage"
    assert call(*clients["sp-holder@pve"]) == 200


def test_lists_are_filtered(root):
    for entry in ACLEntry.objects.filter(ugid__in=USERS):
        entry.delete()
    authz_services.modify_acl(root, "/storage/spm", ["PVEDatastoreUser"], users=["sp-holder@pve"])
    holder, _ = login("sp-holder@pve")
    listed = {s["storage"] for s in holder.get(f"{API}/storage").json()["data"]}
    assert "spm" in listed and "spm-other" not in listed
    on_node = {s["storage"] for s in holder.get(f"{API}/nodes/{NODE}/storage").json()["data"]}
    assert on_node == {"spm"}
    ensure_volume()
    # Datastore.Audit alone does not show another VM's image (it needs VM.Config.Disk on the VM).
    authz_services.modify_acl(root, "/storage/spm", ["PVEAuditor"], users=["sp-other@pve"])
    other, _ = login("sp-other@pve")
    assert other.get(f"{STORAGE}/content").json()["data"] == []
    authz_services.modify_acl(root, "/vms/9400", ["PVEVMAdmin"], users=["sp-other@pve"])
    assert [v["volid"] for v in other.get(f"{STORAGE}/content").json()["data"]] == [VOL]


def test_storage_lists_cost_the_same_whatever_the_number_of_storages(root, tmp_path):
    for entry in ACLEntry.objects.filter(ugid__in=USERS):
        entry.delete()
    authz_services.modify_acl(root, "/storage", ["PVEDatastoreUser"], users=["sp-holder@pve"])
    holder, _ = login("sp-holder@pve")

    def costs() -> list[int]:
        result = []
        for url in (f"{API}/storage", f"{API}/nodes/{NODE}/storage?enabled=1"):
            holder.get(url)  # warm (ticket keys, resolver state)
            with counting() as queries:
                assert holder.get(url).status_code == 200
            result.append(queries.count)
        return result

    before = costs()
    made = [
        services.create_storage(f"spq-{i}", {"path": str(tmp_path / str(i)), "disable": i % 2 == 0}, actor=root)
        for i in range(5)
    ]
    try:
        assert costs() == before
    finally:
        for storage in made:
            services.delete_storage(storage, actor=root)
