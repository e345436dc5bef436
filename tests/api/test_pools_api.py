"""``/pools`` and ``/pools/{poolid}`` with real ACLs: who may list, read, create, change and remove a
pool, members added and removed only with the privileges Proxmox asks on each of them, every
refusal changing nothing, and a member then covered by the pool's ACL entries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client

from authz import services
from authz.models import Pool, User
from authz.permissions import has_privileges
from replicator import client as replicator_client
from tests.api_client import login_enforcing_csrf, revoke_grants, users_with_grants
from vms.models import VM, Storage

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
NODE = "testnode"
PASSWORD = "pool-api-password"
POOL, OTHER_POOL, NEW_POOL = "pa-pool", "pa-other", "pa-new"
VMID, OTHER_VM, STORE = 7650, 7651, "pa-store"
USERS = ("pa-nobody@pve", "pa-auditor@pve", "pa-admin@pve", "pa-vmadmin@pve")


@pytest.fixture(scope="module")
def clients() -> Iterator[dict[str, tuple[Client, str]]]:
    root = User.objects.get(userid="root@pam")
    for poolid in (POOL, OTHER_POOL):
        if not Pool.objects.filter(poolid=poolid).exists():
            services.add_pool(poolid, actor=root, comment=f"{poolid} comment")
    for vmid in (VMID, OTHER_VM):
        if not VM.objects.filter(vmid=vmid).exists():
            VM(vmid=vmid, node_id=NODE, config={"name": f"pa{vmid}", "memory": "128"}).save()
    if not Storage.objects.filter(storeid=STORE).exists():
        Storage(storeid=STORE, path="/tmp/pa-store").save()
    users_with_grants(USERS, PASSWORD, [
        (f"/pool/{POOL}", "PVEPoolUser", ["pa-auditor@pve"]),
        (f"/pool/{POOL}", "PVEPoolAdmin", ["pa-admin@pve", "pa-vmadmin@pve"]),
        (f"/pool/{NEW_POOL}", "PVEPoolAdmin", ["pa-admin@pve"]),
        ("/vms", "PVEVMAdmin", ["pa-vmadmin@pve"]),
        ("/storage", "PVEDatastoreAdmin", ["pa-vmadmin@pve"]),
    ])  # fmt: skip
    logged_in = {userid: login_enforcing_csrf(userid, PASSWORD) for userid in USERS}
    logged_in["root@pam"] = login_enforcing_csrf("root@pam", "test-root-password")
    yield logged_in
    revoke_grants(USERS)  # nothing of this module shows in later modules' user.cfg
    for vm in VM.objects.filter(vmid__in=(VMID, OTHER_VM)):
        vm.delete()
    for storage in Storage.objects.filter(storeid=STORE):
        storage.delete()
    for poolid in (POOL, OTHER_POOL, NEW_POOL):
        if Pool.objects.filter(poolid=poolid).exists():
            services.delete_pool(poolid, actor=root)


def call(clients, userid: str, method: str, path: str, **params: object) -> tuple[int, dict]:
    client, csrf = clients[userid]
    if method == "get":
        response = client.get(f"{API}{path}", params)
    else:
        body = "&".join(f"{k}={v}" for k, v in params.items())
        response = getattr(client, method)(
            f"{API}{path}", body, content_type="application/x-www-form-urlencoded", HTTP_CSRFPREVENTIONTOKEN=csrf
        )
    return response.status_code, response.json()


def pool_of(vmid: int) -> str | None:
    return VM.objects.get(vmid=vmid).pool_id


def test_listing_shows_only_the_pools_one_may_see(clients):
    assert Client().get(f"{API}/pools").status_code == 401
    assert call(clients, "pa-nobody@pve", "get", "/pools") == (200, {"data": []})
    status, body = call(clients, "pa-auditor@pve", "get", "/pools")
    assert status == 200 and body["data"] == [{"poolid": POOL, "comment": f"{POOL} comment"}]
    status, body = call(clients, "root@pam", "get", "/pools", poolid=POOL)
    assert status == 200 and [p["poolid"] for p in body["data"]] == [POOL] and "members" in body["data"][0]


def test_reading_a_pool_needs_pool_audit_first(clients):
    for poolid in (POOL, "pa-missing"):  # the same refusal whether it exists or not
        status, body = call(clients, "pa-nobody@pve", "get", f"/pools/{poolid}")
        assert status == 403 and "Pool.Audit" in body["message"], body
    status, body = call(clients, "pa-auditor@pve", "get", f"/pools/{POOL}")
    assert status == 200 and body["data"]["comment"] == f"{POOL} comment", body


def test_create_needs_pool_allocate_on_the_new_pool_and_delete_an_empty_one(clients):
    before = replicator_client.status()["version"]
    status, body = call(clients, "pa-auditor@pve", "post", "/pools", poolid=NEW_POOL)
    assert status == 403, body
    status, body = call(clients, "pa-admin@pve", "post", "/pools", poolid="bad id!")
    assert status == 400, body
    assert replicator_client.status()["version"] == before
    assert call(clients, "pa-admin@pve", "post", "/pools", poolid=NEW_POOL, comment="fresh")[0] == 200
    assert Pool.objects.get(poolid=NEW_POOL).comment == "fresh"
    status, body = call(clients, "pa-admin@pve", "post", "/pools", poolid=NEW_POOL)
    assert status == 400 and "already exists" in body["message"], body
    assert call(clients, "pa-auditor@pve", "delete", f"/pools/{NEW_POOL}")[0] == 403
    assert call(clients, "pa-admin@pve", "delete", f"/pools/{NEW_POOL}")[0] == 200
    assert not Pool.objects.filter(poolid=NEW_POOL).exists()


def test_members_need_vm_allocate_on_each_and_pool_allocate_on_the_pool(clients):
    before = replicator_client.status()["version"]
    status, body = call(clients, "pa-admin@pve", "put", f"/pools/{POOL}", vms=VMID)  # no VM.Allocate there
    assert status == 403 and f"/vms/{VMID}" in body["message"], body
    status, body = call(clients, "pa-auditor@pve", "put", f"/pools/{POOL}", vms=VMID)
    assert status == 403 and "Pool.Allocate" in body["message"], body
    status, body = call(clients, "pa-vmadmin@pve", "put", f"/pools/{POOL}", vms=f"{VMID},999999")
    assert status == 400 and "does not exist" in body["message"], body  # all or nothing
    assert replicator_client.status()["version"] == before and pool_of(VMID) is None

    status, body = call(clients, "pa-vmadmin@pve", "put", f"/pools/{POOL}", vms=VMID, storage=STORE, comment="c2")
    assert status == 200, body
    assert pool_of(VMID) == POOL and Storage.objects.get(storeid=STORE).pool_id == POOL
    members = call(clients, "pa-auditor@pve", "get", f"/pools/{POOL}")[1]["data"]
    assert {"id": f"qemu/{VMID}", "vmid": VMID, "node": NODE, "type": "qemu", "name": f"pa{VMID}"} in members["members"]
    assert any(m["id"] == f"storage/{NODE}/{STORE}" for m in members["members"]) and members["comment"] == "c2"
    only_vms = call(clients, "pa-auditor@pve", "get", f"/pools/{POOL}", type="qemu")[1]["data"]["members"]
    assert {m["type"] for m in only_vms} == {"qemu"}
    # the pool's ACL entries now cover the VM
    assert has_privileges(User.objects.get(userid="pa-auditor@pve"), f"/vms/{VMID}", ["Pool.Audit"])

    status, body = call(clients, "pa-vmadmin@pve", "put", f"/pools/{POOL}", vms=VMID)
    assert status == 400 and "already a pool member" in body["message"], body
    status, body = call(clients, "pa-vmadmin@pve", "delete", f"/pools/{POOL}")
    assert status == 400 and "not empty" in body["message"], body
    status, body = call(clients, "pa-vmadmin@pve", "put", f"/pools/{POOL}", vms=VMID, storage=STORE, delete=1)
    assert status == 200 and pool_of(VMID) is None and Storage.objects.get(storeid=STORE).pool_id is None, body
    status, body = call(clients, "pa-vmadmin@pve", "put", f"/pools/{POOL}", vms=VMID, delete=1)
    assert status == 400 and "not a pool member" in body["message"], body


def test_moving_from_another_pool_needs_allow_move_and_that_pools_allocate(clients):
    root = User.objects.get(userid="root@pam")
    from vms.services import pools

    pools.update_pool(OTHER_POOL, actor=root, vms=[OTHER_VM])
    try:
        status, body = call(clients, "pa-vmadmin@pve", "put", f"/pools/{POOL}", vms=OTHER_VM)
        assert status == 400 and f"belongs to pool '{OTHER_POOL}'" in body["message"], body
        status, body = call(clients, "pa-vmadmin@pve", "put", f"/pools/{POOL}", vms=OTHER_VM, **{"allow-move": 1})
        assert status == 403 and f"/pool/{OTHER_POOL}" in body["message"], body
        assert pool_of(OTHER_VM) == OTHER_POOL
        status, body = call(clients, "root@pam", "put", f"/pools/{POOL}", vms=OTHER_VM, **{"allow-move": 1})
        assert status == 200 and pool_of(OTHER_VM) == POOL, body
    finally:
        if pool_of(OTHER_VM):
            pools.update_pool(pool_of(OTHER_VM), actor=root, vms=[OTHER_VM], delete=True)


def test_bad_member_ids_are_refused(clients):
    status, body = call(clients, "root@pam", "put", f"/pools/{POOL}", vms="abc")
    assert status == 400 and "vms" in body["errors"], body
    status, body = call(clients, "root@pam", "put", f"/pools/{POOL}", storage="../x")
    assert status == 400 and "storage" in body["errors"], body
    status, body = call(clients, "root@pam", "put", f"/pools/{POOL}", delete=1)
    assert status == 400 and "delete" in body["errors"], body
