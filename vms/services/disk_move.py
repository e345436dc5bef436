"""``move_disk``: a VM's disk copied onto another storage (or into another format), as qemu-server's ``move_vm_disk``.

Checked before the task starts (``check_move``): Datastore.AllocateSpace on the target storage
(and on the source storage when the old volume is to be freed), the disk, the lock, the digest,
the target format. The task (``move_disk``) holds the VM's ``disk`` lock throughout: a stopped
VM's volume is copied with ``qemu-img convert``, a running VM's drive is mirrored by QEMU
(``vms.qemu.blockjobs``) and switched over. Then the config names the new volume and the old
one becomes ``unusedN`` (or, with ``delete``, is freed). On any failure before that the new
volume is freed again and the config is left as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from django.db import transaction

from cluster.services import log_cluster_message
from replicator.exceptions import ConflictError
from vms import devices, permissions
from vms.exceptions import DigestMismatch, StorageError, VMError, VMLocked
from vms.leases import config_lock, task_lease
from vms.models import VM, Storage
from vms.property_strings import property_string_format, property_string_parse, shown
from vms.qemu import blockjobs, process
from vms.services.disks import MAX_UNUSED, _is_drive, _volume, free_quietly
from vms.storage import check_available, volume_format, volume_path, volumes
from vms.storage.volnames import format_size

Log = Callable[[str], None]
LOCK = "disk"
ATTEMPTS = 5


@dataclass(frozen=True)
class MovePlan:
    """What was checked: move ``source`` (drive ``disk`` of VM ``vmid``) to ``storage`` in ``format``."""

    vmid: int
    disk: str
    source: str
    storage: str
    format: str
    delete: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def target_format(storage: Storage, source: str, fmt: str | None) -> str:
    """``fmt`` if the storage takes it; by default the source's format where supported, else the storage's default."""
    default, supported = volumes.storage_formats(storage)
    if fmt:
        if fmt not in supported:
            raise StorageError(f"unsupported format '{shown(fmt)}' on storage '{storage.storeid}'")
        return fmt
    old = volume_format(source)
    return old if old in supported else default


def check_move(
    vm: VM,
    *,
    disk: str,
    storage: str,
    actor: Any,
    fmt: str | None = None,
    delete: bool = False,
    digest: str | None = None,
) -> MovePlan:
    """Every refusal ``move_disk`` has before its task starts; the plan it runs."""
    permissions.authorize(actor, [permissions.Need(("Datastore.AllocateSpace",), f"/storage/{storage}")])
    if vm.lock:
        raise VMLocked(vm.vmid, vm.lock)
    if digest and digest != vm.digest:
        raise DigestMismatch()
    if disk not in vm.config or not _is_drive(disk):
        raise VMError(f"disk '{shown(disk)}' does not exist")
    if devices.parse_drive(vm.config[disk]).is_cdrom:
        raise VMError("you can't move a cdrom")
    volume = _volume(vm.config[disk])
    if volume is None or volume.storage is None:
        raise VMError(f"disk '{disk}' has no associated volume")
    target = Storage.objects.filter(storeid=storage).first()
    if target is None:
        raise StorageError(f"storage '{shown(storage)}' does not exist")
    check_available(target)
    if "images" not in target.content.split(","):
        raise StorageError(f"storage '{storage}' does not support vm images")
    new_format = target_format(target, volume.text, fmt)
    if volume.storage == storage and new_format == volume_format(volume.text):
        raise VMError("you can't move to the same storage with same format")
    if delete and in_snapshots(vm, volume.text):
        raise VMError("you can't move a disk with snapshots and delete the source")
    if delete:
        permissions.authorize(actor, [permissions.Need(("Datastore.AllocateSpace",), f"/storage/{volume.storage}")])
    return MovePlan(vm.vmid, disk, volume.text, storage, new_format, bool(delete))


def in_snapshots(vm: VM, volid: str) -> bool:
    """Whether a snapshot of the VM names ``volid`` (then it must stay)."""
    return any(
        (volume := _volume(value)) is not None and volume.text == volid
        for snapshot in (vm.snapshots or {}).values()
        for value in snapshot.values()
    )


@contextlib.contextmanager
def disk_lock(vmid: int, owner: str) -> Iterator[None]:
    """The VM's ``lock: disk`` held by task ``owner`` (taken again by its owner: a no-op) until the move ends."""
    with task_lease(vmid, LOCK, owner):
        yield


def _current(plan: MovePlan) -> VM:
    """The VM, its drive still naming the volume the move started from."""
    vm = VM.objects.get(vmid=plan.vmid)
    volume = _volume(vm.config.get(plan.disk, ""))
    if volume is None or volume.text != plan.source:
        raise VMError(f"disk '{plan.disk}' changed during the move")
    return vm


def move_disk(plan: MovePlan, *, owner: str, user: str, log: Log, bwlimit: int | None = None) -> str:
    """Run a checked move as task ``owner`` (its UPID) for ``user``; the new volume id."""
    with disk_lock(plan.vmid, owner):
        with config_lock(plan.vmid):
            _current(plan)
            running = process.is_running(plan.vmid)
        target = Storage.objects.get(storeid=plan.storage)
        if running:
            new_volid = _mirror(plan, target, log, bwlimit)
        else:
            new_volid = volumes.convert_volume(
                plan.source, target, plan.vmid, fmt=plan.format, progress=log, rate_limit=bwlimit
            )
        try:
            to_free = _switch_config(plan, new_volid, user)
        except BaseException:
            if running:
                log(f"WARN: QEMU already uses '{new_volid}': it is not freed, add it to the config by hand")
            else:
                free_quietly([new_volid], log)
            raise
        log(f"{plan.disk}: now on '{new_volid}'")
        if to_free:
            log(f"removing old volume '{to_free}'")
            free_quietly([to_free], log)
    return new_volid


def _mirror(plan: MovePlan, target: Storage, log: Log, bwlimit: int | None) -> str:
    size = volumes.volume_size(plan.source)
    new_volid = volumes.alloc_volume(target, plan.vmid, size, fmt=plan.format)
    log(f"{plan.disk}: mirroring '{plan.source}' ({format_size(size)}) to '{new_volid}' (drive-mirror)")
    try:
        blockjobs.mirror(plan.vmid, f"drive-{plan.disk}", volume_path(new_volid), plan.format, log=log, bwlimit=bwlimit)
    except BaseException:
        free_quietly([new_volid], log)
        raise
    return new_volid


def _switch_config(plan: MovePlan, new_volid: str, user: str) -> str | None:
    """The drive names the new volume; the old one becomes ``unusedN`` unless freed (returned: free it)."""
    size = format_size(volumes.volume_size(new_volid))
    for _attempt in range(ATTEMPTS):
        with config_lock(plan.vmid):
            vm = _current(plan)
            items = property_string_parse(vm.config[plan.disk], default_key="file")
            items.pop("format", None)
            items["file"], items["size"] = new_volid, size
            config = {**vm.config, plan.disk: property_string_format(items, default_key="file")}
            free = (
                plan.delete
                and volumes.owned_volume(plan.source, plan.vmid) is not None
                and not in_snapshots(vm, plan.source)
            )
            still_used = any((v := _volume(value)) is not None and v.text == plan.source for value in config.values())
            if not free and not still_used:
                key = next(f"unused{i}" for i in range(MAX_UNUSED + 1) if f"unused{i}" not in config)
                config[key] = plan.source
            vm.config = config
            try:
                with transaction.atomic(using="cluster"):
                    vm.save()
                    log_cluster_message(
                        f"update VM {vm.vmid}: move disk {plan.disk} to {plan.storage} ({new_volid})",
                        user=user,
                        tag="qmmove",
                    )
            except ConflictError:
                continue
            return plan.source if free and not still_used else None
    raise ConflictError(f"VM {plan.vmid}: its configuration keeps changing")
