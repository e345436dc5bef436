"""A pool's members (``PUT /pools/{poolid}`` with ``vms``/``storage``, and its listing): the VMs and
storages of this app, in one change set with the pool's comment and its audit entry.

As qemu-server's pool API: Pool.Allocate on the pool, and on each member Proxmox's
``check_perm_modify`` (Permissions.Modify, or VM.Allocate on ``/vms/<vmid>``, Datastore.Allocate
on ``/storage/<id>``). Adding a member that is already in another pool needs ``allow_move``;
removing one (``delete``) needs it to be a member. Anything wrong refuses the whole change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction

from authz import audit, services
from authz.exceptions import AccessError
from authz.models import Pool
from authz.permissions import check
from cluster.models import Node
from vms.models import VM, Storage

CLUSTER = "cluster"


def members(pool: Pool) -> list[dict[str, Any]]:
    """The listing of ``GET /pools/{poolid}``: each VM, and each storage once per node it is on."""
    listed: list[dict[str, Any]] = []
    for vm in VM.objects.filter(pool=pool).order_by("vmid"):
        entry: dict[str, Any] = {"id": f"qemu/{vm.vmid}", "vmid": vm.vmid, "node": vm.node_id, "type": "qemu"}
        if vm.config.get("name"):
            entry["name"] = vm.config["name"]
        if "template" in vm.config:
            entry["template"] = int(vm.config["template"] in ("1", 1))
        listed.append(entry)
    nodes = list(Node.objects.values_list("name", flat=True))
    for storage in Storage.objects.filter(pool=pool).order_by("storeid"):
        allowed = [n for n in storage.nodes.split(",") if n] or nodes
        for node in sorted(allowed):
            listed.append(
                {"id": f"storage/{node}/{storage.storeid}", "storage": storage.storeid, "node": node, "type": "storage"}
            )
    return listed


def update_pool(
    poolid: str,
    *,
    actor: Any,
    comment: str | None = None,
    vms: Iterable[int] = (),
    storages: Iterable[str] = (),
    delete: bool = False,
    allow_move: bool = False,
) -> None:
    """The comment and the members changed together; every check first, then one change set."""
    pool = Pool.objects.filter(poolid=poolid).first()
    check(actor, f"/pool/{poolid}", ["Pool.Allocate"])
    if pool is None:
        raise AccessError(f"pool '{poolid}' does not exist")
    moves = {"delete": delete, "allow_move": allow_move}
    changed_vms = [_member(VM, vmid, pool, actor, **moves) for vmid in dict.fromkeys(vms)]
    changed_storages = [_member(Storage, storeid, pool, actor, **moves) for storeid in dict.fromkeys(storages)]
    with transaction.atomic(using=CLUSTER):
        if comment is not None:
            services.modify_pool(poolid, actor=actor, comment=comment)
        target = None if delete else pool
        for vm in changed_vms:
            vm.pool = target
            vm.save(update_fields=["pool"])
        for storage in changed_storages:
            storage.pool = target
            storage.save(update_fields=["pool"])
        if changed_vms or changed_storages:
            names = [f"VM {vm.vmid}" for vm in changed_vms] + [f"storage {s.storeid}" for s in changed_storages]
            verb = "removed from" if delete else "added to"
            audit.record(actor, f"{', '.join(names)} {verb} pool '{poolid}'")


MEMBER_KINDS: dict[type[VM] | type[Storage], tuple[str, str, str]] = {
    VM: ("/vms/{}", "VM.Allocate", "VM {}"),
    Storage: ("/storage/{}", "Datastore.Allocate", "storage '{}'"),
}


def _member(
    model: type[VM] | type[Storage], key: Any, pool: Pool, actor: Any, *, delete: bool, allow_move: bool
) -> Any:
    """The VM or storage ``key``, checked as Proxmox's ``check_perm_modify`` and for its membership."""
    path, privilege, label = MEMBER_KINDS[model]
    check(actor, path.format(key), ["Permissions.Modify", privilege], any_of=True)
    row = model.objects.filter(pk=key).first()
    if row is None:
        raise AccessError(f"{label.format(key)} does not exist")
    _membership(label.format(key), row.pool_id, pool, actor, delete=delete, allow_move=allow_move)
    return row


def _membership(what: str, current: str | None, pool: Pool, actor: Any, *, delete: bool, allow_move: bool) -> None:
    if delete:
        if current != pool.poolid:
            raise AccessError(f"{what} is not a pool member")
    elif current == pool.poolid:
        raise AccessError(f"{what} is already a pool member")
    elif current:
        if not allow_move:
            raise AccessError(f"{what} belongs to pool '{current}'")
        check(actor, f"/pool/{current}", ["Pool.Allocate"])  # taken out of that pool as well
