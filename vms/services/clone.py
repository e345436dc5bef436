"""Templates and clones, as qemu-server's ``template`` and ``clone_vm`` do them.

A template's disks become read-only base volumes (``base-<vmid>-disk-N``) and its config gets
``template: 1``; a template never starts. A clone copies a VM's config under a new VMID with new
MACs and a new smbios1 uuid: a full clone copies each disk (``qemu-img convert``; for a running
VM QMP ``drive-mirror``, cut off once ready with the VM paused for that instant), a linked clone
(the default for a template) makes a copy-on-write child of each base volume (a qcow2 overlay on
a directory storage, a subvolume snapshot on btrfs). The new VM is stored with ``lock: clone``
while its disks are made; on failure the volumes made and its config are removed again.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from authz.models import Pool
from cluster.models import Node
from cluster.services import log_cluster_message
from replicator.exceptions import ConflictError
from vms import config as vmconfig
from vms import devices, lookups, permissions
from vms.exceptions import StorageError, VMError, VMLocked, VMNotFound
from vms.leases import config_lock
from vms.models import VM, Storage
from vms.permissions import Need
from vms.property_strings import property_string_format, property_string_parse, shown
from vms.qemu import blockjobs
from vms.runtime_paths import vm_pid
from vms.services import disks
from vms.storage import VolumeError, check_available, resolve, volume_path, volumes
from vms.storage.volnames import format_size

Progress = Callable[[str], None]
CLUSTER = "cluster"
# Never copied into a clone (a snapshot's own keys, from its section, included).
SNAPSHOT_KEYS = ("snapshots", "parent", "snaptime", "vmstate", "snapstate", "runningmachine", "runningcpu")


def _quiet(line: str) -> None:
    pass


def _say(progress: Progress | None, line: str) -> None:
    if progress:
        progress(line)


def _save(vm: VM, config: Mapping[str, str], message: str, actor: Any, tag: str) -> VM:
    vm.config = dict(config)
    with transaction.atomic(using=CLUSTER):
        vm.save()
        log_cluster_message(message, user=permissions.principal_of(actor) or "", tag=tag)
    return vm


def _check_local(vm: VM) -> None:
    """Its disks and its QEMU are on its own node: only there is it templated or cloned (the API forwards there)."""
    if vm.node_id != settings.PVE_NODE_NAME:
        raise VMNotFound(vm.vmid, settings.PVE_NODE_NAME)


def _disk_keys(config: Mapping[str, str]) -> list[str]:
    return sorted(k for k in config if permissions.key_class(k) == "drive")


# --- template ----------------------------------------------------------------------------------


def check_template(vm: VM, *, actor: Any, disk: str | None = None) -> None:
    """VM.Allocate on the VM; not locked, no snapshots, stopped, not a template already (unless one ``disk``)."""
    permissions.authorize(actor, [Need(("VM.Allocate",))], vmid=vm.vmid)
    _check_local(vm)
    if vm.lock:
        raise VMLocked(vm.vmid, vm.lock)
    if vm.snapshots:
        raise VMError("unable to create template, because VM contains snapshots")
    if vm.config.get("template") == "1" and not disk:
        raise VMError("you can't convert a template to a template")
    if vm_pid(vm.vmid) is not None:
        raise VMError("you can't convert a VM to template if VM is running")


def template_vm(vm: VM, *, actor: Any, disk: str | None = None, progress: Progress | None = None) -> VM:
    """``qm template``: ``template: 1``, then each disk (or only ``disk``) made a base volume, the config following each."""
    with config_lock(vm.vmid):
        vm = lookups.get_vm(vm.vmid, vm.node_id)
        check_template(vm, actor=actor, disk=disk)
        vm = _save(vm, {**vm.config, "template": "1"}, f"VM {vm.vmid} converted to template", actor, "qmtemplate")
        for key in _disk_keys(vm.config):
            if disk and key != disk:
                continue
            value = vm.config[key]
            volume = disks.volume_of(value)
            if volume is None:
                continue  # a CD-ROM or an empty drive
            try:
                _, _, name = resolve(volume.text)
            except VolumeError as exc:
                raise StorageError(f"{key}: {exc}") from None
            if name.is_base or name.vmid != vm.vmid:
                _say(progress, f"{key}: {volume.text} is left as it is (a base volume, or not VM {vm.vmid}'s)")
                continue
            base = volumes.create_base(volume.text)
            items = property_string_parse(value, default_key="file")
            items["file"] = base
            config = {**vm.config, key: property_string_format(items, default_key="file")}
            vm = _save(vm, config, f"update VM {vm.vmid}: {key} is now the base volume {base}", actor, "qmtemplate")
            _say(progress, f"{key}: converted {volume.text} to base volume {base}")
    return vm


# --- clone -------------------------------------------------------------------------------------


@dataclass
class ClonePlan:
    """What a clone will make: the new VM's config without its disks, and the disks to copy or link."""

    newid: int
    node: str
    full: bool
    running: bool
    pool: str | None
    storage: Storage | None
    format: str | None
    config: dict[str, str]
    drives: dict[str, str] = field(default_factory=dict)
    snapname: str | None = None  # copy the disks as this snapshot holds them


def _target_storage(storage: str | None, target: str | None) -> Storage | None:
    if not storage:
        return None
    found = Storage.objects.filter(storeid=storage).first()
    if found is None:
        raise vmconfig.ConfigError({"storage": f"storage '{shown(storage)}' does not exist"})
    check_available(found)
    if target:
        check_available(found, target)
        if not found.shared:
            raise VMError(f"can't clone to non-shared storage '{storage}'")
    if "images" not in found.content.split(","):
        raise vmconfig.ConfigError({"storage": f"storage '{storage}' does not support vm images"})
    return found


def _storage_rules(config: Mapping[str, str], storage: str | None) -> tuple[list[permissions.Rule], bool]:
    """qemu-server's ``check_storage_access_clone``: the rules, and whether every volume is on shared storage."""
    shared = {s.storeid: s.shared for s in Storage.objects.all()}
    rules: list[permissions.Rule] = []
    sharedvm = True
    for key in _disk_keys(config):
        drive = devices.parse_drive(config[key])
        volume = drive.volume
        if volume.kind == "none":
            continue
        if drive.is_cdrom and volume.kind == "cdrom":
            rules.append(Need(("Sys.Console",), "/"))
            continue
        if volume.storage is None or not shared.get(volume.storage, False):
            sharedvm = False
        if not drive.is_cdrom and volume.storage is not None:
            rules.append(Need(("Datastore.AllocateSpace",), f"/storage/{storage or volume.storage}"))
    if config.get("vmstatestorage"):
        rules.append(Need(("Datastore.AllocateSpace",), f"/storage/{config['vmstatestorage']}"))
    return rules, sharedvm


def _new_config(
    vm: VM, config: Mapping[str, str], *, full: bool, snapname: str | None, name: str | None, description: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The clone's config without its disks, and the disks to clone (key -> source drive value)."""
    new: dict[str, str] = {}
    drives: dict[str, str] = {}
    for key, value in config.items():
        if key in SNAPSHOT_KEYS or key.startswith("unused") or key == "template":
            continue
        if permissions.key_class(key) != "drive":
            new[key] = value
            continue
        drive = devices.parse_drive(value)
        if drive.is_cdrom or drive.volume.kind == "none" or drive.media == "cloudinit":
            new[key] = value  # a cloud-init drive holds no volume: the clone's image is built at its start
            continue
        volume = disks.volume_of(value)
        if volume is None:
            raise VMError(f"{'Full' if full else 'Linked'} clone feature is not supported for drive '{key}'")
        if not full:
            try:
                is_base = resolve(volume.text)[2].is_base
            except VolumeError:
                is_base = False
            if not is_base or snapname:  # neither storage links a clone to a snapshot
                raise VMError(f"Linked clone feature is not supported for drive '{key}'")
        drives[key] = value
    new = vmconfig.renew_identity(new, rng=random.Random(secrets.randbits(64)))
    new["name"] = name or f"Copy-of-VM-{config.get('name') or vm.vmid}"
    if description:
        new["description"] = description
    return new, drives


def check_clone(
    vm: VM,
    newid: object,
    *,
    actor: Any,
    name: str | None = None,
    description: str | None = None,
    target: str | None = None,
    storage: str | None = None,
    format: str | None = None,
    full: bool | None = None,
    pool: str | None = None,
    snapname: str | None = None,
) -> ClonePlan:
    """Everything ``clone_vm`` checks, without writing (qemu-server's ``clone_vm`` checks, in its order)."""
    checked = vmconfig.validate_vmid(newid)
    extra = vmconfig.validate_options(
        {k: v for k, v in (("name", name), ("description", description)) if v}, creating=False
    )
    local = settings.PVE_NODE_NAME
    target = None if target in (None, "", local, "localhost") else target
    permissions.authorize(actor, [Need(("VM.Clone",)), permissions.allocate_rule(checked, pool)], vmid=vm.vmid)
    _check_local(vm)
    if pool and not Pool.objects.filter(poolid=pool).exists():
        raise vmconfig.ConfigError({"pool": f"pool '{shown(pool)}' does not exist"})
    if target and not Node.objects.filter(name=target).exists():
        raise VMError(f"no such cluster node '{shown(target)}'")
    target_storage = _target_storage(storage, target)
    if vm.lock:
        raise VMLocked(vm.vmid, vm.lock)
    if snapname and snapname not in (vm.snapshots or {}):
        raise VMError(f"snapshot '{shown(snapname)}' does not exist")
    full = full if full is not None else vm.config.get("template") != "1"
    if storage and not full:
        raise VMError("parameter 'storage' not allowed for linked clones")
    if format and not full:
        raise VMError("parameter 'format' not allowed for linked clones")
    old = vm.snapshots[snapname] if snapname else vm.config
    rules, sharedvm = _storage_rules(old, storage)
    permissions.authorize(actor, rules, vmid=vm.vmid)
    if target and not sharedvm:
        raise VMError(f"can't clone VM to node '{target}' (VM uses local storage)")
    if VM.objects.filter(vmid=checked).exists():
        raise VMError(f"unable to create VM {checked}: config file already exists")
    config, drives = _new_config(
        vm, old, full=full, snapname=snapname, name=extra.get("name"), description=extra.get("description")
    )
    running = vm_pid(vm.vmid) is not None
    return ClonePlan(
        checked, target or vm.node_id, full, running, pool, target_storage, format, config, drives, snapname
    )


def _target_format(target: Storage, source_format: str, wanted: str | None) -> str:
    """Proxmox's ``resolve_dst_disk_format``: the asked format, else the source's; the storage's default if unsupported."""
    default, supported = volumes.storage_formats(target)
    fmt = wanted or source_format
    return fmt if fmt in supported else default


def _clone_drive(
    vm: VM, plan: ClonePlan, key: str, made: list[str], *, progress: Progress | None, bwlimit: int | None
) -> str:
    items = property_string_parse(plan.drives[key], default_key="file")
    source = items["file"]
    if plan.full:
        source_storage, _, name = resolve(source)
        target = plan.storage or source_storage
        fmt = _target_format(target, name.format, plan.format)
        _say(progress, f"create full clone of drive {key} ({source})")
        if plan.running and not plan.snapname:
            new = volumes.alloc_volume(target, plan.newid, volumes.volume_size(source), fmt=fmt)
            made.append(new)
            _say(progress, f"drive mirror of drive-{key} onto {new}")
            blockjobs.mirror(
                vm.vmid, f"drive-{key}", volume_path(new), fmt, log=progress or _quiet, bwlimit=bwlimit, switch=False
            )
        else:
            new = volumes.convert_volume(
                source, target, plan.newid, fmt=fmt, progress=progress, rate_limit=bwlimit, snapshot=plan.snapname
            )
            made.append(new)
    else:
        _say(progress, f"create linked clone of drive {key} ({source})")
        new = volumes.linked_clone(source, plan.newid)
        made.append(new)
    items["file"] = new
    items["size"] = format_size(volumes.volume_size(new))
    return property_string_format(items, default_key="file")


def clone_vm(
    vm: VM,
    newid: object,
    *,
    actor: Any,
    owner: str = "",
    progress: Progress | None = None,
    bwlimit: int | None = None,
    **options: Any,
) -> VM:
    """``qm clone``: the new VM stored (``lock: clone``, owned by the task ``owner``), its disks made, then unlocked.

    The source is held under its config lock, shared while it is stopped (other clones may run at
    the same time), exclusive while it runs; the new VMID under its own. Any failure frees the
    volumes made and removes the new config.
    """
    plan = check_clone(vm, newid, actor=actor, **options)
    with config_lock(vm.vmid, shared=not plan.running), config_lock(plan.newid):
        vm = lookups.get_vm(vm.vmid, vm.node_id)
        checked = check_clone(vm, newid, actor=actor, **options)
        if checked.running != plan.running:
            raise VMError("unexpected state change")
        plan = checked
        new_vm = VM(vmid=plan.newid, node_id=plan.node, pool_id=plan.pool, config=plan.config)
        new_vm.lock, new_vm.lock_owner = "clone", owner
        try:
            _save(new_vm, plan.config, f"VM {plan.newid} cloned from VM {vm.vmid} on {plan.node}", actor, "qmclone")
        except ConflictError as exc:
            raise VMError(f"unable to create VM {plan.newid}: {exc}") from None
        made: list[str] = []
        try:
            for key in sorted(plan.drives):
                value = _clone_drive(vm, plan, key, made, progress=progress, bwlimit=bwlimit)
                new_vm.config = {**new_vm.config, key: value}
                new_vm.save()
            new_vm.lock, new_vm.lock_owner = "", ""
            new_vm.save()
        except BaseException as exc:
            disks.free_quietly(reversed(made), progress)
            with transaction.atomic(using=CLUSTER):
                new_vm.delete()
                log_cluster_message(
                    f"VM {plan.newid}: clone failed, removed", user=permissions.principal_of(actor) or "", tag="qmclone"
                )
            raise VMError(f"clone failed: {exc}") from exc
    _say(progress, f"VM {plan.newid} cloned from VM {vm.vmid}")
    return new_vm
