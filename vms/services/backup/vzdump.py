"""``vzdump`` for VMs: each selected VM of this node written to one archive (``archive`` module's format).

One entry point for the API, the CLI and scheduled jobs::

    vzdump(options, *, owner, log, warn, actor=None) -> list[str]   # the volids written

``options`` holds Proxmox's vzdump parameters as strings or numbers (``vmid`` list, ``all``,
``exclude``, ``pool``, ``storage``, ``mode``, ``compress``, ``bwlimit``, ``ionice``, ``remove``,
``prune-backups``, ``protected``, ``notes-template``, ``stopwait``); ``check_vzdump`` validates them
and checks ``actor``'s privileges (VM.Backup on each VM, Datastore.AllocateSpace on the storage)
without writing; ``owner`` is the running task's UPID (the holder of each VM's ``lock: backup``).

Modes: a stopped VM's volumes are read directly (``stop``, whatever was asked); ``snapshot``
reads a running VM's disks as they were at one instant while it runs (fleecing, else QEMU's
backup job copies them first: :mod:`.live`), its filesystems frozen by the guest agent around
that start when ``agent`` is on; ``suspend`` pauses the vCPUs for the start instead (Proxmox
resumes as soon as the job has started);
``stop`` shuts the guest down, copies its volumes, and starts it again if it was running.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from authz.models import Pool
from cluster.services import log_cluster_message
from portal.tasks import locks
from portal.tasks.upid import parse_upid
from vms import devices, permissions
from vms.config import ConfigError
from vms.exceptions import StorageError, VMError
from vms.jobs import options as job_options
from vms.models import VM, Storage
from vms.permissions import Need
from vms.property_strings import property_string_parse, shown
from vms.qemu import lifecycle
from vms.qemu.fleecing import Fleece
from vms.runtime_paths import vm_pid
from vms.services.backup import archive, live, prune
from vms.storage import backups, check_available, qemu_img, resolve, volumes
from vms.storage.volnames import format_size

Log = Callable[[str], None]
MODES = ("snapshot", "suspend", "stop")
COMPRESS = ("0", "1", "gzip", "lzo", "zstd")
# Accepted as Proxmox's schema has them (clients such as Ansible's proxmox_backup always send
# notification-mode) and checked; no mail or notification is sent by this implementation.
ACCEPTED = ("mailto", "mailnotification", "notification-mode", "pigz")
DRIVE_ORDER = ("ide", "sata", "scsi", "virtio", "efidisk", "tpmstate")
DEFAULT_STOPWAIT = 10  # minutes
TIME_LIMIT = 7 * 24 * 3600  # seconds a vzdump task may run (many large VMs)


@dataclass
class Plan:
    """What a vzdump run does, checked: the VMs of this node, the target storage and the options."""

    vmids: list[int]
    skipped: list[int]
    storage: Storage
    mode: str = "snapshot"
    compress: str = "0"
    bwlimit: int | None = None
    ionice: int | None = 7
    remove: bool = True
    keep: dict[str, int] | None = None
    protected: bool = False
    notes_template: str | None = None
    stopwait: int = DEFAULT_STOPWAIT
    command_line: str = ""
    errors: list[str] = field(default_factory=list)


def _flag(options: Mapping[str, Any], key: str, default: bool) -> bool:
    value = str(options.get(key, "1" if default else "0"))
    if value not in ("0", "1"):
        raise ConfigError({key: "type check ('boolean') failed"})
    return value == "1"


def _integer(options: Mapping[str, Any], key: str, low: int, high: int | None = None) -> int | None:
    if options.get(key) in (None, ""):
        return None
    text = str(options[key])
    if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
        raise ConfigError({key: f"value must be an integer between {low} and {high or 'infinity'}"})
    return int(text)


def _vmid_list(value: Any, key: str) -> list[int]:
    items = value if isinstance(value, list | tuple) else re.split(r"[,;\s]+", str(value or "").strip())
    result: list[int] = []
    for item in items:
        if item in ("", None):
            continue
        if not re.fullmatch(r"[1-9]\d{2,8}", str(item)):
            raise ConfigError({key: f"value '{shown(str(item))}' does not look like a valid VMID"})
        result.append(int(item))
    return sorted(set(result))


def _selected(options: Mapping[str, Any], node: str) -> tuple[list[int], list[int]]:
    """(this node's VMIDs, other nodes' VMIDs) of the selection: ``all``, ``pool`` or the ``vmid`` list."""
    all_ = _flag(options, "all", False)
    pool = options.get("pool") or None
    vmids = _vmid_list(options.get("vmid"), "vmid")
    exclude = set(_vmid_list(options.get("exclude"), "exclude"))
    if sum(bool(x) for x in (all_, pool, vmids)) != 1:
        raise ConfigError({"vmid": "please specify exactly one of 'vmid', 'all' or 'pool'"})
    if exclude and not (all_ or pool):
        raise ConfigError({"exclude": "option conflicts with option 'vmid'"})
    if pool:
        if not Pool.objects.filter(poolid=pool).exists():
            raise ConfigError({"pool": f"pool '{shown(str(pool))}' does not exist"})
        rows = VM.objects.filter(pool_id=pool)
    elif all_:
        rows = VM.objects.all()
    else:
        rows = VM.objects.filter(vmid__in=vmids)
    owners = {vm.vmid: vm.node_id for vm in rows if vm.vmid not in exclude}
    local = sorted(v for v, n in owners.items() if n == node)
    missing = [v for v in vmids if v not in owners]  # fails visibly in the task, as Proxmox
    return sorted(local + missing), sorted(v for v, n in owners.items() if n != node)


def check_vzdump(options: Mapping[str, Any], *, actor: Any = None, node: str | None = None) -> Plan:
    """Validate ``options`` and, for an ``actor``, check VM.Backup on each VM and AllocateSpace on the storage."""
    node = node or settings.PVE_NODE_NAME
    unknown = set(options) - {
        "vmid", "all", "exclude", "pool", "storage", "mode", "compress", "bwlimit", "ionice", "remove",
        "prune-backups", "protected", "notes-template", "stopwait", "node", "zstd", "lockwait", *ACCEPTED,
    }  # fmt: skip
    if unknown:
        raise ConfigError({key: "property is not defined in schema" for key in sorted(unknown)})
    accepted = {key: options[key] for key in ACCEPTED if options.get(key) not in (None, "")}
    job_options.check_options(accepted)  # checked as a backup job checks them
    vmids, skipped = _selected(options, node)
    storeid = str(options.get("storage") or "local")
    storage = Storage.objects.filter(storeid=storeid).first()
    if storage is None:
        raise ConfigError({"storage": f"storage '{shown(storeid)}' does not exist"})
    if "backup" not in storage.content.split(","):
        raise StorageError(f"storage '{storeid}' does not support backups")
    mode = str(options.get("mode") or "snapshot")
    if mode not in MODES:
        raise ConfigError({"mode": f"value '{shown(mode)}' does not have a value in the enumeration"})
    compress = str(options.get("compress", "0"))
    if compress not in COMPRESS:
        raise ConfigError({"compress": f"value '{shown(compress)}' does not have a value in the enumeration"})
    try:
        archive.compressor(compress)
    except archive.ArchiveError as exc:
        raise ConfigError({"compress": str(exc)}) from None
    keep = prune.parse_keep(str(options["prune-backups"])) if options.get("prune-backups") else None
    notes = options.get("notes-template")
    if notes is not None and (len(str(notes)) > 1024 or "\0" in str(notes)):
        raise ConfigError({"notes-template": "value may have at most 1024 characters"})
    plan = Plan(
        vmids,
        skipped,
        storage,
        mode=mode,
        compress=compress,
        bwlimit=_integer(options, "bwlimit", 0) or None,
        ionice=_integer(options, "ionice", 0, 8) if options.get("ionice") not in (None, "") else 7,
        remove=_flag(options, "remove", True),
        keep=keep,
        protected=_flag(options, "protected", False),
        notes_template=str(notes) if notes is not None else None,
        stopwait=_integer(options, "stopwait", 0) or DEFAULT_STOPWAIT,
    )
    plan.command_line = "vzdump " + " ".join(
        [*(str(v) for v in _vmid_list(options.get("vmid"), "vmid"))]
        + [f"--{k} {options[k]}" for k in sorted(options) if k != "vmid" and options[k] not in (None, "")]
    )
    if actor is not None:
        rules: list[permissions.Rule] = [Need(("Datastore.AllocateSpace",), f"/storage/{storeid}")]
        rules += [Need(("VM.Backup",), f"/vms/{vmid}") for vmid in vmids]
        permissions.authorize(actor, rules)
    return plan


# --- one VM --------------------------------------------------------------------------------------


@dataclass
class Disk:
    key: str
    volid: str
    storeid: str
    format: str
    size: int


def _drive_order(key: str) -> tuple[int, int]:
    match = re.fullmatch(r"([a-z]+?)(\d+)", key)
    if not match:
        return (len(DRIVE_ORDER), 0)
    prefix = match.group(1)
    return (DRIVE_ORDER.index(prefix) if prefix in DRIVE_ORDER else len(DRIVE_ORDER), int(match.group(2)))


def backup_disks(config: Mapping[str, str], log: Log) -> list[Disk]:
    """The disks a backup holds, in Proxmox's order: not CD-ROMs, cloud-init or ``backup=0`` drives."""
    found: list[Disk] = []
    keys = [k for k in config if permissions.key_class(k) == "drive"]
    for key in sorted(keys, key=_drive_order):
        drive = devices.parse_drive(config[key])
        if drive.is_cdrom or drive.volume.kind in ("none", "cloudinit") or drive.media == "cloudinit":
            continue
        items = property_string_parse(config[key], default_key="file")
        if items.get("backup") == "0":
            log(f"exclude disk '{key}' '{drive.volume.text}' (backup=no)")
            continue
        if drive.volume.storage is None:
            raise VMError(f"{key}: '{shown(drive.volume.text)}' is not a storage volume (unable to back up)")
        try:
            _, _, name = resolve(drive.volume.text)
        except ValueError as exc:
            raise VMError(f"{key}: {exc}") from None
        size = volumes.volume_size(drive.volume.text)
        found.append(Disk(key, drive.volume.text, drive.volume.storage, name.format, size))
        log(f"include disk '{key}' '{drive.volume.text}' {format_size(size)}")
    return found


def _offline_source(disk: Disk, tmpdir: Path, log: Log) -> str:
    """A raw file holding ``disk``'s bytes: the volume itself when raw, else a sparse converted copy."""
    storage, plugin, name = resolve(disk.volid)
    check_available(storage)
    path = plugin.path(name)
    if disk.format == "raw":
        return path
    temp = str(tmpdir / f"disk-{disk.key}.raw")
    log(f"{disk.key}: reading {disk.format} volume")
    qemu_img.create(temp, "raw", disk.size)
    qemu_img.convert(path, disk.format, temp, "raw")
    return temp


def _notes(template: str, vm: VM, node: str) -> str:
    """Proxmox's ``{{guestname}}``, ``{{node}}``, ``{{vmid}}``, ``{{cluster}}`` (``\\n`` a new line)."""
    values = {"guestname": vm.config.get("name", f"VM {vm.vmid}"), "node": node, "vmid": str(vm.vmid)}
    values["cluster"] = getattr(settings, "PVE_CLUSTER_NAME", "") or ""
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: values.get(m.group(1), m.group(0)), template)
    return text.replace("\\n", "\n")


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _VMLog:
    """The VM's part of the task log: each line to the task (``INFO: ...``) and kept for ``<base>.log``."""

    def __init__(self, log: Log, warn: Log) -> None:
        self.lines: list[str] = []
        self._log, self._warn = log, warn

    def _keep(self, level: str, line: str) -> None:
        self.lines.append(f"{datetime.now().strftime('%Y-%m-%d %H:%M:%S')} {level}: {line}")

    def info(self, line: str) -> None:
        self._keep("INFO", line)
        self._log(f"INFO: {line}")

    def warn(self, line: str) -> None:
        self._keep("WARN", line)
        self._warn(line)


def backup_vm(vmid: int, plan: Plan, *, owner: str, log: Log, warn: Log) -> str:
    """One VM backed up under ``lock: backup`` held by task ``owner``; the archive's volid."""
    vm = VM.objects.filter(vmid=vmid).first()
    if vm is None or vm.node_id != settings.PVE_NODE_NAME:
        raise VMError(f"unable to find VM '{vmid}'")
    _check_limit(vmid, plan)
    spec = locks.LockSpec("vm", str(vmid), "backup")
    locks.acquire(spec, owner)
    try:
        return _backup_locked(VM.objects.get(vmid=vmid), plan, log=log, warn=warn)
    finally:
        locks.release(spec, owner)


def _check_limit(vmid: int, plan: Plan) -> None:
    """With ``remove=0`` a retention (the sum of its keep-* counts) is a limit the backup may not pass."""
    if plan.remove or not plan.keep or plan.keep.get("keep-all"):
        return
    limit = sum(plan.keep.get(key, 0) for key in prune.KEEP_KEYS)
    count = sum(1 for entry in prune.group_entries(plan.storage, vmid) if not entry.protected)
    if limit and count >= limit:
        raise VMError(
            f"There is a max backup limit of {limit} enforced by the target storage or the vzdump parameters."
            " Either increase the limit or delete old backup(s)."
        )


def _backup_locked(vm: VM, plan: Plan, *, log: Log, warn: Log) -> str:
    vmlog = _VMLog(log, warn)
    started = time.time()
    vmlog.info(f"Starting Backup of VM {vm.vmid} (qemu)")
    vmlog.info(f"Backup started at {datetime.fromtimestamp(started).strftime('%Y-%m-%d %H:%M:%S')}")
    running = vm_pid(vm.vmid) is not None
    vmlog.info(f"status = {'running' if running else 'stopped'}")
    vmlog.info(f"VM Name: {vm.config.get('name', '')}")
    disks = backup_disks(vm.config, vmlog.info)
    mode = plan.mode if running else "stop"
    vmlog.info(f"backup mode: {mode}")
    if plan.ionice is not None:
        vmlog.info(f"ionice priority: {plan.ionice}")
    plugin = volumes.enabled_plugin(plan.storage)
    dump = plugin.content_dir("backup")
    dump.mkdir(parents=True, exist_ok=True)
    name = archive.archive_name(vm.vmid, started, plan.compress)
    target = dump / name
    if target.exists():
        raise VMError(f"archive '{name}' already exists")
    tmpdir = dump / f".{archive.base_name(vm.vmid, started)}.tmp"
    tmpdir.mkdir(mode=0o700)  # disk copies and the fleecing socket: the guest's data, root's only
    writer = None
    fleece: Fleece | None = None
    sources: dict[str, str] = {}
    restart = False
    try:
        vmlog.info(f"creating vzdump archive '{target}'")
        if mode == "stop" and running:
            vmlog.info("stopping virtual guest")
            lifecycle.shutdown_vm(vm.vmid, log=vmlog.info, warn=vmlog.warn, skiplock=True, timeout=plan.stopwait * 60)
            restart = True
            running = False
        if running:
            fleece = live.start_fleecing(vm, mode, {d.key: d.size for d in disks}, tmpdir, vmlog.info, vmlog.warn)
        if running and fleece is None:
            keys = [d.key for d in disks]
            sources = live.copy_disks(vm, mode, keys, tmpdir, vmlog.info, vmlog.warn, plan.bwlimit)
        writer = archive.ArchiveWriter(target, tmpdir / name, plan.compress, ionice=plan.ionice)
        writer.add_bytes(archive.CONFIG_MEMBER, archive.backup_config(vm.full_config(), _map(disks)).encode())
        for disk in disks:
            member = f"disk-{disk.key}.raw"
            copied = running and fleece is None  # the backup job applied bwlimit already
            meter = archive.Meter(disk.key, disk.size, vmlog.info, None if copied else plan.bwlimit)
            if fleece is not None:
                writer.add_stream(member, fleece.reader(f"drive-{disk.key}"), disk.size, meter)
                fleece.check_readers()
            else:
                source = sources.get(disk.key) or _offline_source(disk, tmpdir, vmlog.info)
                writer.add_image(member, source, disk.size, meter)
        if restart:
            vmlog.info("restarting virtual guest")
            lifecycle.start_vm(vm.vmid, log=vmlog.info, skiplock=True)
            restart = False
        writer.commit()
        writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        if restart:
            with contextlib.suppress(Exception):
                lifecycle.start_vm(vm.vmid, log=vmlog.info, skiplock=True)
        raise
    finally:
        if fleece is not None:
            fleece.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    vmlog.info(f"archive file size: {format_size(target.stat().st_size)}")
    files = backups.side_files(target)
    if plan.notes_template:
        files["notes"].write_text(_notes(plan.notes_template, vm, settings.PVE_NODE_NAME) + "\n")
    if plan.protected:
        files["protected"].touch()
        vmlog.info("marked backup as protected")
    vmlog.info(f"Finished Backup of VM {vm.vmid} ({_elapsed(time.time() - started)})")
    files["log"].write_text("".join(line + "\n" for line in vmlog.lines))
    return f"{plan.storage.storeid}:backup/{name}"


def _map(disks: list[Disk]) -> list[tuple[str, str, str]]:
    return [(d.key, d.storeid, d.format) for d in disks]


# --- the job -------------------------------------------------------------------------------------


def _task_user(upid: str) -> str:
    """Who started the task (the API checked them before queueing it)."""
    try:
        return parse_upid(upid).user
    except ValueError:
        return "root@pam"


def _notify(message: str, user: str, pri: int, warn: Log) -> None:
    """The mail-free notification: an entry in the replicated cluster log (a read-only cluster: a warning)."""
    try:
        with transaction.atomic(using="cluster"):
            log_cluster_message(message, user=user, tag="vzdump", pri=pri)
    except Exception as exc:
        warn(f"unable to write the cluster log entry: {exc}")


def vzdump(
    options: Mapping[str, Any], *, owner: str, log: Log, warn: Log, actor: Any = None, node: str | None = None
) -> list[str]:
    """Back up the selected VMs of this node one after another; the volids written.

    A VM that fails is logged and the others still run; the job then fails naming them.
    After each backup with ``remove`` (default) the VM's older backups are pruned.
    """
    plan = check_vzdump(options, actor=actor, node=node)
    log(f"INFO: starting new backup job: {plan.command_line}")
    if plan.skipped:
        log(f"INFO: skip external VMs: {', '.join(map(str, plan.skipped))}")
    written: list[str] = []
    failed: list[int] = []
    user = permissions.principal_of(actor) or _task_user(owner)
    for vmid in plan.vmids:
        try:
            volid = backup_vm(vmid, plan, owner=owner, log=log, warn=warn)
        except Exception as exc:
            log(f"ERROR: Backup of VM {vmid} failed - {exc}")
            _notify(f"vzdump: backup of VM {vmid} failed - {exc}", user, 3, warn)
            failed.append(vmid)
            continue
        written.append(volid)
        _notify(f"vzdump: VM {vmid} backed up to {volid}", user, 6, warn)
        if plan.remove and plan.keep is not None:
            prune.prune_group(plan.storage, vmid, plan.keep, log=lambda line: log(f"INFO: {line}"))
    if failed:
        raise VMError(f"job errors (backup of VM {', '.join(map(str, failed))} failed)")
    log("INFO: Backup job finished successfully")
    return written
