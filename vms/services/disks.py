"""VM disks on storage: ``storage:SIZE`` drives allocated, drives detached to ``unusedN`` or freed, resize, destroy.

qemu-server's semantics: removing a disk drive keeps its volume as ``unusedN`` (``force``: frees
it), removing ``unusedN`` frees the volume, a drive given a new volume leaves the old one as
``unusedN``; only volumes the VM owns are ever freed, and freeing one takes Datastore.AllocateSpace
on its storage. Volumes are made before the config naming them is stored (and freed again when
that fails) and freed only after the config no longer names them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from cluster.services import log_cluster_message
from vms import devices, permissions
from vms.exceptions import DigestMismatch, StorageError, VMError, VMLocked
from vms.leases import config_lock
from vms.models import VM, Storage
from vms.property_strings import property_string_format, property_string_parse, shown
from vms.qemu import qmp
from vms.runtime_paths import vm_pid
from vms.storage import VolumeError, check_available, qemu_img, volume_path, volumes
from vms.storage.volnames import format_size, parse_size

GIB = 1024**3
OVMF_VARS = {"4m": "/usr/share/OVMF/OVMF_VARS_4M.fd", "2m": "/usr/share/OVMF/OVMF_VARS.fd"}
EFI_VARS_SIZE = {"4m": 540672, "2m": 131072}
TPM_STATE_SIZE = 4 * 1024 * 1024
MAX_UNUSED = 256
Progress = Callable[[str], None]


def _is_drive(key: str) -> bool:
    return permissions.key_class(key) == "drive"


def _volume(value: str) -> devices.Volume | None:
    """The storage volume a drive value names (None: a CD-ROM, no volume, a host path, a new disk)."""
    try:
        drive = devices.parse_drive(value)
    except ValueError:
        return None
    volume = drive.volume
    if drive.is_cdrom or volume.storage is None or volume.kind in ("new", "cloudinit", "none", "cdrom", "path"):
        return None
    return volume


def volume_of(value: str) -> devices.Volume | None:
    """The storage volume a drive value names, for the other services (None: no volume of a storage)."""
    return _volume(value)


def _new_size(key: str, items: Mapping[str, str], gib: str) -> int:
    if key == "efidisk0":
        return EFI_VARS_SIZE["4m" if items.get("efitype") == "4m" else "2m"]
    if key == "tpmstate0":
        return TPM_STATE_SIZE
    return int(float(gib) * GIB)


def allocate_new_disks(
    vmid: int, updates: Mapping[str, str], *, progress: Progress | None = None
) -> tuple[dict[str, str], list[str]]:
    """Each ``storage:SIZE`` drive of ``updates`` allocated: the updates naming the new volumes, and those volumes."""
    result = dict(updates)
    made: list[str] = []
    try:
        for key in sorted(updates):
            if not _is_drive(key):
                continue
            items = property_string_parse(updates[key], default_key="file")
            gib = devices.new_disk_size(items.get("file", ""))
            if gib is None:
                continue
            storage = Storage.objects.get(storeid=items["file"].partition(":")[0])
            size = _new_size(key, items, gib)
            volid = volumes.alloc_volume(storage, vmid, size, fmt=items.pop("format", None))
            made.append(volid)
            if key == "efidisk0":
                _copy_efi_vars(volid, items.get("efitype"))
            if progress:
                progress(f"{key}: successfully created disk '{volid},size={format_size(size)}'")
            items["file"], items["size"] = volid, format_size(size)
            result[key] = property_string_format(items, default_key="file")
    except BaseException:
        free_quietly(made)
        raise
    return result, made


def _copy_efi_vars(volid: str, efitype: str | None) -> None:
    """An EFI disk starts as OVMF's variable store template, as qemu-server's ``create_efidisk`` makes it."""
    template = OVMF_VARS["4m" if efitype == "4m" else "2m"]
    if os.path.exists(template):
        qemu_img.convert(template, "raw", volume_path(volid), volumes.resolve(volid)[2].format)


def free_quietly(volids: Iterable[str], progress: Progress | None = None) -> list[str]:
    """Free each volume; the ones that could not be freed are reported (``progress``) and returned."""
    failed = []
    for volid in volids:
        try:
            volumes.free_volume(volid)
        except (StorageError, VolumeError, OSError) as exc:
            failed.append(volid)
            if progress:
                progress(f"Could not remove disk '{volid}', check manually: {exc}")
    return failed


@dataclass
class Detach:
    """What a config change does to volumes: ``unusedN`` entries to add, volumes to free, and the rules for it."""

    unused: dict[str, str] = field(default_factory=dict)
    to_free: list[str] = field(default_factory=list)
    rules: list[permissions.Rule] = field(default_factory=list)


def detach_changes(
    vmid: int, current: Mapping[str, str], updates: Mapping[str, str], removed: Iterable[str], *, force: bool = False
) -> Detach:
    """The volumes a change detaches (kept as ``unusedN``) or frees (``unusedN`` removed, or ``force``)."""
    plan = Detach()
    detached: list[str] = []
    for key in removed:
        volume = _volume(current[key]) if key in current and permissions.key_class(key) in ("drive", "unused") else None
        if volume is None:
            continue
        if key.startswith("unused") or force:
            if volumes.owned_volume(volume.text, vmid) is not None:
                plan.to_free.append(volume.text)
        else:
            detached.append(volume.text)
    for key, value in updates.items():
        old = _volume(current[key]) if key in current and _is_drive(key) else None
        new = _volume(value)
        if old is not None and (new is None or new.text != old.text):
            detached.append(old.text)
    remaining = {k: v for k, v in current.items() if k not in removed} | dict(updates)
    in_use = {v.text for v in map(_volume, remaining.values()) if v is not None} if remaining else set()
    taken = {k for k in remaining if k.startswith("unused")}
    for volid in detached:
        if volid in in_use or volumes.owned_volume(volid, vmid) is None:
            continue
        key = next(f"unused{i}" for i in range(MAX_UNUSED + 1) if f"unused{i}" not in taken)
        taken.add(key)
        plan.unused[key] = volid
        in_use.add(volid)
    for volid in plan.to_free:
        if volid in in_use:
            raise StorageError(f"unable to delete '{shown(volid)}' - volume is still in use (snapshot?)")
        plan.rules.append(permissions.Need(("Datastore.AllocateSpace",), f"/storage/{volid.partition(':')[0]}"))
    return plan


def owned_volumes(vm: VM) -> list[str]:
    """The volumes the VM's config and its snapshots name (drives, ``unusedN``, snapshot state volumes)
    that the VM owns."""
    found = []
    for config in [vm.config, *(vm.snapshots or {}).values()]:
        for key, value in sorted(config.items()):
            volume = _volume(value) if permissions.key_class(key) in ("drive", "unused") or key == "vmstate" else None
            if volume is not None and volumes.owned_volume(volume.text, vm.vmid) and volume.text not in found:
                found.append(volume.text)
    return found


def check_bases_unused(vm: VM) -> None:
    """A template is not destroyed while one of its base volumes backs a linked clone (qemu-server's check)."""
    if vm.config.get("template") != "1":
        return
    for volid in owned_volumes(vm):
        try:
            in_use = volumes.linked_clones_of(volid)
        except (StorageError, VolumeError):
            continue  # not reachable here: freeing it will say so
        if in_use:
            raise StorageError(f"base volume '{volid}' is still in use by linked cloned")


def check_stopped(vmid: int, what: str) -> None:
    if vm_pid(vmid) is not None:
        raise VMError(f"VM {vmid} is running - {what} failed")


def destroy_disks(vm: VM, *, unreferenced: bool = False, progress: Progress | None = None) -> None:
    """Free the VM's volumes (``unreferenced``: also every image of its VMID on the enabled storages here)."""
    check_stopped(vm.vmid, "destroy")
    referenced = owned_volumes(vm)
    free_quietly(referenced, progress)
    if not unreferenced:
        return
    for storage in Storage.objects.all():
        if "images" not in storage.content.split(","):
            continue
        try:
            check_available(storage)
            listed = volumes.list_volumes(storage, content="images", vmid=vm.vmid)
        except StorageError:
            continue
        free_quietly([v["volid"] for v in listed if v["volid"] not in referenced], progress)


def resize_disk(
    vm: VM,
    *,
    disk: str,
    size: str,
    actor: Any,
    digest: str | None = None,
    skiplock: bool = False,
    progress: Progress | None = None,
) -> int:
    """Grow a disk to ``size`` (``+SIZE`` adds), as qemu-server's ``resize_vm``; the new size in bytes.

    Under the VM's config lock: the volume is grown (for a stopped VM by the storage; for a running
    one QEMU grows it through QMP ``block_resize`` on the drive's backend ``drive-<disk>``), then the
    config's ``size`` is updated. The new size is rounded up to whole KiB, as qemu-server does.
    """
    permissions.check_skiplock(actor, skiplock)
    with config_lock(vm.vmid):
        vm = VM.objects.get(vmid=vm.vmid)
        if vm.lock and not skiplock:
            raise VMLocked(vm.vmid, vm.lock)
        if digest and digest != vm.digest:
            raise DigestMismatch()
        if disk not in vm.config or not _is_drive(disk):
            raise VMError(f"disk '{shown(disk)}' does not exist")
        drive = devices.parse_drive(vm.config[disk])
        if drive.is_cdrom:
            raise VMError("you can't resize a cdrom")
        volume = _volume(vm.config[disk])
        if volume is None:
            raise VMError(f"disk '{disk}' has no associated volume")
        permissions.authorize(actor, [permissions.Need(("Datastore.AllocateSpace",), f"/storage/{volume.storage}")])
        current = volumes.volume_size(volume.text)
        new_size = parse_size(size.removeprefix("+")) + (current if size.startswith("+") else 0)
        new_size += -new_size % 1024
        if new_size < current:
            raise StorageError("shrinking disks is not supported")
        if new_size == current:
            return current
        running = vm_pid(vm.vmid) is not None
        volumes.resize_volume(volume.text, new_size, running=running)
        if running:
            qmp.command(vm.vmid, "block_resize", {"device": f"drive-{disk}", "size": new_size}, timeout=60)
        new_size = volumes.volume_size(volume.text)
        items = property_string_parse(vm.config[disk], default_key="file")
        items["size"] = format_size(new_size)
        with transaction.atomic(using="cluster"):
            vm.config = {**vm.config, disk: property_string_format(items, default_key="file")}
            vm.save()
            log_cluster_message(
                f"update VM {vm.vmid}: resize --disk {disk} --size {size}",
                user=permissions.principal_of(actor) or "",
                tag="resize",
            )
    if progress:
        progress(f"resized {disk} ({volume.text}) to {format_size(new_size)}{' online' if running else ''}")
    return new_size
