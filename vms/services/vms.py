"""VM configuration services: create, update, destroy, unlock; every write replicated and audited.

Every edge (API, admin, ``qm``) writes through these. ``actor`` is who asks: the request's user
(an API token's user carries its token id), or root@pam's user for the CLIs. Each write checks
``actor``'s privileges for exactly what it changes (``vms.permissions``), then stores the VM and
its cluster log entry, naming the actor (a token by its token id), in one change set. Bad input
or a refusal raises before anything is written.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction

from authz.models import Pool
from authz.permissions import principal_of
from authz.services.acl import remove_object_access
from cluster.models import Node
from cluster.services import log_cluster_message
from replicator.exceptions import ConflictError
from vms import config as vmconfig
from vms import devices, permissions
from vms.exceptions import DigestMismatch, RootOnly, StorageError, VMLocked, VMNotFound, VMProtected
from vms.models import VM, Storage
from vms.property_strings import shown
from vms.services import disks

CLUSTER = "cluster"


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()  # ``pool=UNCHANGED``: the update leaves the VM's pool alone


def actor_name(actor: Any) -> str:
    """How the cluster log names ``actor``: its user id, or its token id."""
    return principal_of(actor) or ""


def _check_pool(pool: str | None) -> None:
    if pool and not Pool.objects.filter(poolid=pool).exists():
        raise vmconfig.ConfigError({"pool": f"pool '{shown(pool)}' does not exist"})


def check_volumes(config: Mapping[str, str]) -> None:
    """Volumes named by drives being set: the storage exists and holds that content (root@pam too)."""
    storages = {s.storeid: s for s in Storage.objects.all()}
    errors: dict[str, str] = {}
    for key, value in config.items():
        kind = permissions.key_class(key)
        if kind not in ("drive", "unused"):
            continue
        volume = devices.parse_drive(value).volume
        if volume.storage is None or volume.kind == "cloudinit":
            continue
        storage = storages.get(volume.storage)
        if storage is None:
            errors[key] = f"storage '{volume.storage}' does not exist"
        elif volume.kind == "new" and "images" not in storage.content.split(","):
            errors[key] = f"storage '{volume.storage}' does not support vm images"
        elif kind == "unused" and volume.kind != "images":
            errors[key] = f"unable to use volume {shown(volume.text)} - content type needs to be 'images'"
        elif kind == "drive" and volume.kind not in ("new", "images", "iso"):
            errors[key] = "content type needs to be 'images' or 'iso'"
    if errors:
        raise vmconfig.ConfigError(errors)


def _described(updates: Mapping[str, str], removed: Iterable[str], pool_move: tuple[str, str] | None) -> str:
    """Proxmox's ``update VM <vmid>: -key value ... -delete a,b`` (values escaped and cut)."""
    parts = [f"-{key} {'<hidden>' if key == 'cipassword' else shown(value)}" for key, value in sorted(updates.items())]
    removed = list(removed)
    if removed:
        parts.append(f"-delete {','.join(removed)}")
    if pool_move is not None:
        parts.append(f"-pool {pool_move[1] or '(none)'}")
    return " ".join(parts)


# --- create ------------------------------------------------------------------------------------


def check_vm_create(
    vmid: object,
    options: Mapping[str, object],
    *,
    node: str,
    actor: Any,
    pool: str | None = None,
    storage: str | None = None,
) -> tuple[int, dict[str, str]]:
    """Everything ``create_vm`` checks, without writing: the VMID and the validated config."""
    checked_vmid = vmconfig.validate_vmid(vmid)
    config = vmconfig.validate_options(options, creating=True)
    _check_pool(pool)
    rules = permissions.create_rules(checked_vmid, config, pool=pool, storage=storage)
    permissions.authorize(actor, rules, vmid=checked_vmid, pool=pool)
    check_volumes(config)
    existing = VM.objects.filter(vmid=checked_vmid).first()
    if existing is not None:  # qemu-server's check_vmid_unused, word for word (clients match it)
        raise ConflictError(f"VM {checked_vmid} already exists on node '{existing.node_id}'")
    if not Node.objects.filter(name=node).exists():
        raise VMNotFound(checked_vmid, node)
    return checked_vmid, config


def create_vm(
    vmid: object,
    options: Mapping[str, object],
    *,
    node: str,
    actor: Any,
    pool: str | None = None,
    storage: str | None = None,
    progress: disks.Progress | None = None,
) -> VM:
    """Validate, authorise and store a new VM owned by ``node``; refuses an id used anywhere.

    ``storage:SIZE`` drives are allocated first and freed again if the VM cannot be stored.
    """
    checked_vmid, config = check_vm_create(vmid, options, node=node, actor=actor, pool=pool, storage=storage)
    config, allocated = disks.allocate_new_disks(checked_vmid, config, progress=progress)
    try:
        config = vmconfig.normalise_for_create(checked_vmid, dict(config), rng=random.Random(secrets.randbits(64)))
        vm = VM(vmid=checked_vmid, node_id=node, pool_id=pool or None, config=config)
        with transaction.atomic(using=CLUSTER):
            vm.save()
            where = f" in pool {pool}" if pool else ""
            log_cluster_message(f"VM {checked_vmid} created on {node}{where}", user=actor_name(actor), tag="qmcreate")
    except BaseException:
        disks.free_quietly(allocated, progress)
        raise
    return vm


# --- update ------------------------------------------------------------------------------------


def check_vm_update(
    vm: VM,
    *,
    set_: Mapping[str, object],
    delete: Iterable[str] | str | None = None,
    skiplock: bool = False,
    pool: Any = UNCHANGED,
    actor: Any,
) -> tuple[dict[str, str], list[str]]:
    """Everything ``update_vm_config`` checks but the digest, without writing: the validated changes."""
    removed = vmconfig.delete_list(delete)
    vmconfig.apply_update(vm.config, set_, removed)  # every error of the change (set and delete) at once
    updates = vmconfig.validate_options(set_, creating=False)
    permissions.check_skiplock(actor, skiplock)
    rules = permissions.config_change_rules(vm.vmid, vm.config, updates, removed)
    if pool is not UNCHANGED:
        _check_pool(pool)
        rules += permissions.pool_change_rules(vm.vmid, vm.pool_id, pool or None)
    permissions.authorize(actor, rules, vmid=vm.vmid)
    check_volumes(updates)
    if vm.config.get("protection") == "1":
        for key in removed:
            if key in vm.config and permissions.key_class(key) in ("drive", "unused"):
                raise VMProtected(f"can't remove drive '{key}'")
    if vm.lock and not skiplock:
        raise VMLocked(vm.vmid, vm.lock)
    return updates, removed


def update_vm_config(
    vm: VM,
    *,
    set_: Mapping[str, object],
    delete: Iterable[str] | str | None = None,
    digest: str | None = None,
    skiplock: bool = False,
    pool: Any = UNCHANGED,
    actor: Any,
    force: bool = False,
) -> VM:
    """Apply a config change (and a pool move) with its audit entry in one change set.

    Removed disks stay as ``unusedN`` (``force``: are freed); removed ``unusedN`` are freed after the
    change is stored; ``storage:SIZE`` drives are allocated before and freed again if it fails.

    ``digest`` guards against concurrent edits as in Proxmox; the row version ``vm`` was read at
    is the base of the write, so a change made since is a conflict, never overwritten.
    """
    updates, removed = check_vm_update(vm, set_=set_, delete=delete, skiplock=skiplock, pool=pool, actor=actor)
    if digest is not None and digest != vm.digest:
        raise DigestMismatch()
    detach = disks.detach_changes(vm.vmid, vm.config, updates, removed, force=force)
    permissions.authorize(actor, detach.rules, vmid=vm.vmid)
    updates, allocated = disks.allocate_new_disks(vm.vmid, updates)
    old_config, old_pool = vm.config, vm.pool_id
    try:
        config = vmconfig.apply_update(vm.config, updates, removed) | detach.unused
        config = vmconfig.normalise_devices(vm.vmid, config, rng=random.Random(secrets.randbits(64)))
        new_pool = old_pool if pool is UNCHANGED else (pool or None)
        pool_move = (old_pool or "", new_pool or "") if new_pool != old_pool else None
        with transaction.atomic(using=CLUSTER):
            vm.config, vm.pool_id = config, new_pool
            vm.save()
            message = f"update VM {vm.vmid}: {_described(updates, removed, pool_move)}"
            log_cluster_message(message, user=actor_name(actor), tag="qmconfig")
    except BaseException:
        vm.config, vm.pool_id = old_config, old_pool
        disks.free_quietly(allocated)
        raise
    failed = disks.free_quietly(detach.to_free)
    if failed:
        raise StorageError(f"configuration updated, but unable to free {', '.join(failed)} - check manually")
    return vm


# --- destroy, unlock ---------------------------------------------------------------------------


def check_vm_destroy(vm: VM, *, actor: Any, skiplock: bool = False) -> None:
    """VM.Allocate on the VM; not protected; not locked (only root@pam may skip the lock)."""
    permissions.check_skiplock(actor, skiplock)
    permissions.authorize(actor, [permissions.Need(("VM.Allocate",))], vmid=vm.vmid)
    if vm.config.get("protection") == "1":
        raise VMProtected(f"can't remove VM {vm.vmid}")
    if vm.lock and not skiplock:
        raise VMLocked(vm.vmid, vm.lock)
    disks.check_bases_unused(vm)


def destroy_vm(
    vm: VM,
    *,
    actor: Any,
    skiplock: bool = False,
    purge: bool = False,
    destroy_unreferenced: bool = False,
    progress: disks.Progress | None = None,
) -> None:
    """Free the VM's volumes (``destroy_unreferenced``: every image of its VMID here), then remove its config.

    ``purge`` is Proxmox's removal from jobs, replication and HA, none of which exist here yet;
    the VM's grants are always removed.
    """
    check_vm_destroy(vm, actor=actor, skiplock=skiplock)
    disks.destroy_disks(vm, unreferenced=destroy_unreferenced, progress=progress)
    if purge and progress:
        progress(f"purging VM {vm.vmid} from related configurations..")
    with transaction.atomic(using=CLUSTER):
        vm.delete()
        remove_object_access(f"/vms/{vm.vmid}")
        log_cluster_message(f"VM {vm.vmid} destroyed", user=actor_name(actor), tag="qmdestroy")


def unlock_vm(vm: VM, *, actor: Any) -> tuple[str, str]:
    """``qm unlock``: remove a lock by hand (root@pam only); the lock and owner it had, empty if none."""
    if not permissions.is_superuser(actor):
        raise RootOnly("only root can remove a VM's lock")
    was, owner = vm.lock, vm.lock_owner
    if not was:
        return "", ""
    with transaction.atomic(using=CLUSTER):
        vm.lock, vm.lock_owner = "", ""
        vm.save(update_fields=["lock", "lock_owner"])
        held = f", held by {owner}" if owner else ""
        log_cluster_message(f"VM {vm.vmid} unlocked (was '{was}'{held})", user=actor_name(actor), tag="qmunlock")
    return was, owner
