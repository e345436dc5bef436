"""Restore a VM from a backup archive (``qmrestore``, ``POST /nodes/{node}/qemu`` with ``archive``).

qemu-server's rules: VM.Allocate on the VMID (or on ``pool``), or, restoring over an existing VM
with ``force``, VM.Backup on it; access to the archive (Datastore.Allocate on its storage, or
AllocateSpace there plus VM.Backup on the VM it belongs to); Datastore.AllocateSpace on each
storage a disk is restored to. An existing VMID only with ``force``, on this node, stopped, not
protected: its old volumes are freed first. The new VM is stored with ``lock: create`` while
its disks are allocated under its own volume names (on ``storage``, else the disk's original
storage) and filled from the archive; the drives then name the new volumes, ``vmgenid`` is
regenerated, with ``unique`` also the MACs and the smbios1 uuid; parameters given override the
backup's keys (never drives). On failure the volumes made and the config are removed again.
"""

from __future__ import annotations

import os
import random
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from authz.models import Pool
from authz.permissions import has_privileges
from cluster.services import log_cluster_message
from replicator.exceptions import ConflictError
from vms import config as vmconfig
from vms import devices, permissions
from vms.exceptions import StorageError, VMError, VMLocked, VMProtected
from vms.leases import config_lock
from vms.models import VM, Storage
from vms.permissions import Need
from vms.property_strings import property_string_format, property_string_parse, shown
from vms.runtime_paths import vm_pid
from vms.services import disks
from vms.services.backup import archive
from vms.storage import VolumeError, qemu_img, volume_path, volumes
from vms.storage.volnames import format_size

Log = Callable[[str], None]
CLUSTER = "cluster"


@dataclass
class RestorePlan:
    vmid: int
    archive: str
    path: Path
    node: str
    storage: str | None = None
    unique: bool = False
    force: bool = False
    pool: str | None = None
    bwlimit: int | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    existing: bool = False
    config: dict[str, str] = field(default_factory=dict)
    maps: dict[str, tuple[str, str]] = field(default_factory=dict)


def _archive_path(text: str, vmid: int, actor: Any) -> Path:
    """The archive's file: a backup volume id (access checked), or a host path (root@pam only)."""
    if text.startswith("/") and not text.startswith("/dev/"):
        if not permissions.is_superuser(actor):
            raise vmconfig.ConfigError({"archive": "only root can restore from a file path"})
        path = Path(os.path.realpath(text))
        if not path.is_file():
            raise vmconfig.ConfigError({"archive": f"archive '{shown(text)}' does not exist"})
        return path
    try:
        volume = devices.parse_volume(text)
    except ValueError as exc:
        raise vmconfig.ConfigError({"archive": str(exc)}) from None
    permissions.authorize(actor, permissions.volume_rules(vmid, volume))
    if volume.kind == "path":
        path = Path(text)
    else:
        if volume.kind != "backup":
            raise vmconfig.ConfigError({"archive": f"volume '{shown(text)}' is not a backup (content type 'backup')"})
        try:
            path = Path(volume_path(text))
        except VolumeError as exc:
            raise vmconfig.ConfigError({"archive": str(exc)}) from None
    if not path.is_file():
        raise vmconfig.ConfigError({"archive": f"archive '{shown(text)}' does not exist"})
    return path


def _target_storage(storeid: str, actor: Any) -> Storage:
    storage = Storage.objects.filter(storeid=storeid).first()
    if storage is None:
        raise StorageError(f"storage '{shown(storeid)}' does not exist")
    if "images" not in storage.content.split(","):
        raise StorageError(f"storage '{storeid}' does not support vm images")
    permissions.authorize(actor, [Need(("Datastore.AllocateSpace",), f"/storage/{storeid}")])
    return storage


def check_restore(
    archive_text: str,
    vmid: object,
    *,
    actor: Any,
    node: str | None = None,
    storage: str | None = None,
    unique: bool = False,
    force: bool = False,
    pool: str | None = None,
    bwlimit: int | None = None,
    overrides: Mapping[str, object] | None = None,
) -> RestorePlan:
    """Every check of a restore, in qemu-server's order, without writing; the archive's config read."""
    checked = vmconfig.validate_vmid(vmid)
    node = node or settings.PVE_NODE_NAME
    if pool and not Pool.objects.filter(poolid=pool).exists():
        raise vmconfig.ConfigError({"pool": f"pool '{shown(pool)}' does not exist"})
    if storage:
        permissions.authorize(actor, [Need(("Datastore.AllocateSpace",), f"/storage/{storage}")])
    existing = VM.objects.filter(vmid=checked).first()
    if not (
        permissions.is_superuser(actor)
        or has_privileges(actor, f"/vms/{checked}", ["VM.Allocate"])
        or (pool and has_privileges(actor, f"/pool/{pool}", ["VM.Allocate"]))
        or (force and existing is not None and has_privileges(actor, f"/vms/{checked}", ["VM.Backup"]))
    ):
        permissions.authorize(actor, [Need(("VM.Allocate",), f"/vms/{checked}")])
    conflicts = {
        k: "option conflicts with option 'archive'"
        for k in overrides or {}
        if permissions.key_class(k) in ("drive", "unused")
    }
    if conflicts:
        raise vmconfig.ConfigError(conflicts)
    updates = vmconfig.validate_options(overrides or {}, creating=False)
    # qemu-server checks no key privileges for a restore's overrides; what only root may set stays root's.
    rules = permissions.config_change_rules(checked, {}, updates, ())
    permissions.authorize(actor, [r for r in rules if isinstance(r, permissions.RootOnlyRule)])
    path = _archive_path(archive_text, checked, actor)
    if existing is not None:
        if not force:
            raise VMError(f"unable to restore VM {checked} - VM {checked} already exists on node '{existing.node_id}'")
        if existing.node_id != node:
            raise VMError(f"unable to restore VM {checked} - VM {checked} already exists on node '{existing.node_id}'")
        if existing.config.get("protection") == "1":
            raise VMProtected(f"unable to restore VM {checked}")
        if existing.lock:
            raise VMLocked(checked, existing.lock)
        if vm_pid(checked) is not None:
            raise VMError(f"unable to restore VM {checked} - VM is running")
    config, maps = archive.parse_backup_config(archive.read_config(path))
    for storeid, _fmt in maps.values():
        _target_storage(storage or storeid, actor)
    final = _final_config(config, {}, updates)
    bridges: list[permissions.Rule] = []
    for key, value in final.items():
        if permissions.key_class(key) == "net":
            bridges += permissions.bridge_rules(value)
    permissions.authorize(actor, bridges, vmid=checked)
    return RestorePlan(
        checked,
        archive_text,
        path,
        node,
        storage,
        unique,
        force,
        pool,
        bwlimit,
        updates,
        existing is not None,
        config,
        maps,
    )


def _final_config(config: Mapping[str, str], drives: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    result = {k: v for k, v in config.items() if k not in archive.DROPPED_KEYS and permissions.key_class(k) != "unused"}
    result.update(drives)
    result.update(overrides)
    return result


def _restore_disk(member: Any, tar: Any, key: str, plan: RestorePlan, log: Log, made: list[str]) -> str:
    storeid, fmt = plan.maps[key]
    target = Storage.objects.get(storeid=plan.storage or storeid)
    default, supported = volumes.storage_formats(target)
    fmt = fmt if fmt in supported else default
    volid = volumes.alloc_volume(target, plan.vmid, member.size, fmt=fmt)
    made.append(volid)
    log(f"restore {key} to {volid} ({format_size(member.size)})")
    source = tar.extractfile(member)
    meter = archive.Meter(key, member.size, log, plan.bwlimit)
    path = volume_path(volid)
    if fmt == "raw":
        archive.write_sparse(source, path, member.size, meter)
    else:
        temp = Path(path).with_name(f".restore-{plan.vmid}-{key}.raw")
        try:
            qemu_img.create(str(temp), "raw", member.size)
            archive.write_sparse(source, str(temp), member.size, meter)
            qemu_img.convert(str(temp), "raw", path, fmt)
        finally:
            temp.unlink(missing_ok=True)
    items = property_string_parse(plan.config[key], default_key="file")
    items["file"] = volid
    items.pop("format", None)
    items["size"] = format_size(member.size)
    return property_string_format(items, default_key="file")


def restore(plan: RestorePlan, *, actor: Any, owner: str, log: Log) -> VM:
    """Restore the checked ``plan`` (checked again under the VM's config lock); the restored VM."""
    with config_lock(plan.vmid):
        plan = check_restore(
            plan.archive, plan.vmid, actor=actor, node=plan.node, storage=plan.storage, unique=plan.unique,
            force=plan.force, pool=plan.pool, bwlimit=plan.bwlimit, overrides=plan.overrides,
        )  # fmt: skip
        user = permissions.principal_of(actor) or ""
        vm = VM.objects.filter(vmid=plan.vmid).first()
        if vm is not None:
            log(f"destroying old disks of VM {plan.vmid}")
            disks.destroy_disks(vm, unreferenced=True, progress=log)
        else:
            vm = VM(vmid=plan.vmid, node_id=plan.node)
        vm.config, vm.snapshots, vm.pool_id = {}, {}, plan.pool or vm.pool_id
        vm.lock, vm.lock_owner = "create", owner
        try:
            with transaction.atomic(using=CLUSTER):
                vm.save()
                log_cluster_message(f"VM {plan.vmid}: restore from {plan.archive} started", user=user, tag="qmrestore")
        except ConflictError as exc:
            raise VMError(f"unable to restore VM {plan.vmid} - {exc}") from None
        made: list[str] = []
        try:
            drives = _restore_disks(plan, log, made)
            config = _final_config(plan.config, drives, plan.overrides)
            rng = random.Random(secrets.randbits(64))
            if plan.unique:
                config = vmconfig.renew_identity(config, rng=rng)
            elif config.get("vmgenid"):
                config["vmgenid"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            vm.config, vm.lock, vm.lock_owner = config, "", ""
            with transaction.atomic(using=CLUSTER):
                vm.save()
                log_cluster_message(f"VM {plan.vmid} restored from {plan.archive}", user=user, tag="qmrestore")
        except BaseException as exc:
            disks.free_quietly(reversed(made), log)
            with transaction.atomic(using=CLUSTER):
                vm.delete()
                log_cluster_message(f"VM {plan.vmid}: restore failed, removed", user=user, tag="qmrestore")
            raise VMError(f"restore failed: {exc}") from exc
    log(f"VM {plan.vmid} restored from {plan.archive}")
    return vm


def _restore_disks(plan: RestorePlan, log: Log, made: list[str]) -> dict[str, str]:
    drives: dict[str, str] = {}
    with archive.open_archive(plan.path) as tar:
        for member in tar:
            if member.name == archive.CONFIG_MEMBER:
                continue
            key = member.name.removeprefix("disk-").removesuffix(".raw")
            if key not in plan.maps or key not in plan.config or not member.isfile():
                raise archive.ArchiveError(f"unexpected member '{shown(member.name)}' in the archive")
            drives[key] = _restore_disk(member, tar, key, plan, log, made)
    missing = sorted(set(plan.maps) - set(drives))
    if missing:
        raise archive.ArchiveError(f"the archive lacks the disk(s) {', '.join(missing)}")
    return drives


def extract_config(archive_text: str, *, actor: Any) -> str:
    """pve-storage's ``extract_vzdump_config``: the archive's config text (access as for a restore, no VM)."""
    return archive.read_config(_archive_path(archive_text, -1, actor))
