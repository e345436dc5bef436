"""Pool membership reaches the resolver through the providers vms registers (authz imports no vms).

A VM or storage in a pool is covered by the pool's ACL entries; moving it out is in force at
the next check (the snapshot is rebuilt when the replicated version moves).
"""

from __future__ import annotations

import pytest

from authz import pool_members, services
from authz.models import Pool, User
from authz.permissions import has_privileges
from vms.models import VM, Storage

pytestmark = pytest.mark.usefixtures("replicator")
USER, POOL, VMID, STOREID = "pm-user@pve", "pm-pool", 7710, "pm-store"


@pytest.fixture(scope="module")
def member() -> User:
    root = User.objects.get(userid="root@pam")
    if not User.objects.filter(userid=USER).exists():
        services.add_user(USER, actor=root, password="pool-member-password")
    if not Pool.objects.filter(poolid=POOL).exists():
        services.add_pool(POOL, actor=root)
    services.modify_acl(root, f"/pool/{POOL}", ["PVEVMUser", "PVEDatastoreUser"], users=[USER])
    return User.objects.get(userid=USER)


def test_vms_registers_its_providers() -> None:
    paths = dict(pool_members.memberships())
    for vmid, pool in VM.objects.exclude(pool=None).values_list("vmid", "pool_id"):
        assert paths[f"/vms/{vmid}"] == pool
    for storeid, pool in Storage.objects.exclude(pool=None).values_list("storeid", "pool_id"):
        assert paths[f"/storage/{storeid}"] == pool


def test_a_vm_in_a_pool_gets_the_pools_roles_until_it_leaves(member: User) -> None:
    vm = VM.objects.filter(vmid=VMID).first() or VM(vmid=VMID, node_id="testnode", config={"memory": "64"})
    vm.pool_id = POOL
    vm.save()
    assert has_privileges(member, f"/vms/{VMID}", ["VM.PowerMgmt"])
    vm.pool_id = None
    vm.save()
    assert not has_privileges(member, f"/vms/{VMID}", ["VM.PowerMgmt"])


def test_a_storage_in_a_pool_gets_the_pools_roles_until_it_leaves(member: User) -> None:
    storage = Storage.objects.filter(storeid=STOREID).first() or Storage(storeid=STOREID, path="/srv/pm-store")
    storage.pool_id = POOL
    storage.save()
    assert has_privileges(member, f"/storage/{STOREID}", ["Datastore.AllocateSpace"])
    storage.pool_id = None
    storage.save()
    assert not has_privileges(member, f"/storage/{STOREID}", ["Datastore.AllocateSpace"])
