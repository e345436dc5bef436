"""The members of pools that vms owns, for the ACL resolver: VMs and storages (registered at ready)."""

from __future__ import annotations

from collections.abc import Iterator

from vms.models import VM, Storage


def vm_members() -> Iterator[tuple[str, str]]:
    """``("/vms/<vmid>", poolid)`` of every VM in a pool."""
    for vmid, pool in VM.objects.using("cluster").exclude(pool=None).values_list("vmid", "pool_id"):
        yield f"/vms/{vmid}", pool


def storage_members() -> Iterator[tuple[str, str]]:
    """``("/storage/<storeid>", poolid)`` of every storage in a pool."""
    for storeid, pool in Storage.objects.using("cluster").exclude(pool=None).values_list("storeid", "pool_id"):
        yield f"/storage/{storeid}", pool
