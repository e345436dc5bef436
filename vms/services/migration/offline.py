"""The ``qmigrate`` task of a stopped VM (qemu-server's ``phase1`` and ``phase3_cleanup`` for an offline VM).

Under the VM's ``migrate`` lock (a lease of the task) and its node-local config lock: each local
volume is streamed to the target node over SSH (``pvesm import`` there), then ONE replicated
change moves the VM to the target (``VM.node``, the drive volume ids rewritten to the copies, the
cluster log entry): the config file moves from ``nodes/<source>/`` to ``nodes/<target>/`` on
every node at once. Only after that change is committed are the source volumes freed. Any
failure before it frees the copies on the target again and leaves the VM as it was on the source.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from django.conf import settings
from django.db import transaction

from cluster.services import log_cluster_message
from vms import permissions
from vms.exceptions import VMError
from vms.leases import config_lock, task_lease
from vms.models import VM
from vms.property_strings import property_string_format, property_string_parse
from vms.runtime_paths import vm_pid
from vms.services.disks import free_quietly
from vms.services.migration import remote
from vms.services.migration.plan import LOCK, MigratePlan, check_quorum, local_volumes
from vms.storage import stream

Log = Callable[[str], None]
CLUSTER = "cluster"


def duration(started: float) -> str:
    seconds = int(time.monotonic() - started)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def renamed(config: Mapping[str, str], moved: Mapping[str, str]) -> dict[str, str]:
    """``config`` with each volume id of ``moved`` replaced by its copy (drives, ``unusedN``, ``vmstate``)."""
    result = dict(config)
    for key, value in config.items():
        if key == "vmstate":
            result[key] = moved.get(value, value)
        elif permissions.key_class(key) in ("drive", "unused"):
            items = property_string_parse(value, default_key="file")
            if items.get("file") in moved:
                items["file"] = moved[items["file"]]
                result[key] = property_string_format(items, default_key="file")
    return result


def current(plan: MigratePlan, owner: str, *, online: bool = False) -> VM:
    """The VM re-read under the locks: still here, locked by this task, running exactly when ``online``."""
    vm = VM.objects.get(vmid=plan.vmid)
    if vm.node_id != settings.PVE_NODE_NAME or vm.node_id != plan.source:
        raise VMError(f"VM {plan.vmid} is not on node '{settings.PVE_NODE_NAME}' any more")
    if vm.lock != LOCK or vm.lock_owner != owner:
        raise VMError(f"VM {plan.vmid} is not locked for this migration")
    running = vm_pid(vm.vmid) is not None
    if running and not online:
        raise VMError("can't migrate running VM without --online")
    if online and not running:
        raise VMError(f"VM {plan.vmid} is not running any more: migrate it offline")
    return vm


def migrate_vm(plan: MigratePlan, *, owner: str, user: str, log: Log, bwlimit: int | None = None) -> None:
    """Run a checked offline migration as task ``owner`` (its UPID) for ``user`` (``bwlimit``: KiB/s per copy)."""
    started = time.monotonic()
    log(f"starting migration of VM {plan.vmid} to node '{plan.target}'")
    with task_lease(plan.vmid, LOCK, owner), config_lock(plan.vmid):
        try:
            check_quorum()
            vm = current(plan, owner)
            copies = local_volumes(vm, plan, log=log)
            moved = _copy_and_move(vm, plan, copies, user, log, bwlimit)
        except BaseException as exc:
            log(f"ERROR: migration aborted (duration {duration(started)}): {exc}")
            raise
        if moved:
            log("removing the source volumes")
        failed = free_quietly(list(moved), log)
        if failed:
            log(f"ERROR: migration finished with problems (duration {duration(started)})")
            raise VMError("migration problems")
    log(f"migration finished successfully (duration {duration(started)})")


def _copy_and_move(
    vm: VM, plan: MigratePlan, copies: list[tuple[str, str]], user: str, log: Log, bwlimit: int | None
) -> dict[str, str]:
    """Copy the local volumes, then move the VM; the source volume ids copied (-> their copies)."""
    moved: dict[str, str] = {}
    shell = remote.connect(plan.target) if copies else None
    try:
        if shell is not None:
            copy_volumes(shell, copies, moved, log, bwlimit)
        check_quorum()
        with transaction.atomic(using=CLUSTER):
            vm.node_id = plan.target
            vm.config = renamed(vm.config, moved)
            vm.snapshots = {name: renamed(snap, moved) for name, snap in (vm.snapshots or {}).items()}
            vm.save()
            log_cluster_message(f"VM {vm.vmid} migrated from {plan.source} to {plan.target}", user=user, tag="qmigrate")
        log(f"VM {vm.vmid} now belongs to node '{plan.target}'")
    except BaseException:
        vm.node_id = plan.source
        if shell is not None:
            free_copies(shell, list(moved.values()), log)
        raise
    finally:
        if shell is not None:
            shell.close()
    return moved


def copy_volumes(
    shell: remote.NodeShell, copies: list[tuple[str, str]], moved: dict[str, str], log: Log, bwlimit: int | None
) -> None:
    """Stream each volume to its storage on the target; ``moved`` notes each copy made (to free on failure)."""
    for volid, storeid in copies:
        log(f"found local disk '{volid}'")
        target_volid = f"{storeid}:{volid.partition(':')[2]}"
        fmt = stream.export_format(volid)
        log(f"copying local disk '{volid}' to storage '{storeid}' on node '{shell.node}' ({fmt})")
        chunks = stream.export_chunks(volid, bwlimit_kib=bwlimit, log=log)
        moved[volid] = remote.import_volume(shell, target_volid, fmt, chunks)
        log(f"successfully imported '{moved[volid]}'")


def free_copies(shell: remote.NodeShell, volids: list[str], log: Log) -> None:
    for volid in volids:
        try:
            remote.free_volume(shell, volid)
            log(f"freed '{volid}' on the target again")
        except Exception as exc:
            log(f"ERROR: could not free '{volid}' on the target, check manually: {exc}")
