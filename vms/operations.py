"""Long-running VM operations: the work of a task, logged to its task log.

The API runs these inline under a UPID (``qmcreate``, ``qmdestroy``) once every check has
answered; they act for the request's user, so they are not registered for workers. A URL
download (``download``) is queued for this node's worker: it needs no user's privileges to run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from portal.tasks.registry import operation
from replicator.exceptions import ConflictError
from vms import services
from vms.models import VM, Storage
from vms.qemu import operations as qemu_operations  # noqa: F401  (discovered with this module: the power operations)
from vms.services import backup, disk_move, migration
from vms.storage import transfer, volumes

DOWNLOAD_TIME_LIMIT = 6 * 3600
MOVE_TIME_LIMIT = 24 * 3600
MIGRATE_TIME_LIMIT = 24 * 3600


def create_vm(
    task: Any,
    *,
    vmid: int,
    options: Mapping[str, object],
    node: str,
    actor: Any,
    pool: str | None,
    storage: str | None,
) -> None:
    """``qmcreate``: store the new VM (an id taken meanwhile fails the task)."""
    try:
        services.create_vm(vmid, options, node=node, actor=actor, pool=pool, storage=storage, progress=task.log)
    except ConflictError as exc:
        raise RuntimeError(f"unable to create VM {vmid} - {exc}") from None
    task.log(f"VM {vmid} created")


def destroy_vm(
    task: Any, *, vm: VM, actor: Any, skiplock: bool, purge: bool = False, destroy_unreferenced: bool = False
) -> None:
    """``qmdestroy``: free the VM's volumes, remove its config (and its grants)."""
    services.destroy_vm(
        vm, actor=actor, skiplock=skiplock, purge=purge, destroy_unreferenced=destroy_unreferenced, progress=task.log
    )
    task.log(f"VM {vm.vmid} destroyed")


@operation("vms.download_url", time_limit=DOWNLOAD_TIME_LIMIT)
def download_url(task: Any, *, storeid: str, url: str, volname: str, checksum: list[str] | None) -> None:
    """``download``: a file from an http(s) URL into a storage of this node, checksum verified."""
    storage = Storage.objects.get(storeid=storeid)
    plugin = volumes.enabled_plugin(storage)
    task.log(f"downloading {url} to {storeid}:{volname}")
    temp = transfer.download(url, plugin, transfer.upload_limit(plugin, settings.PVE_UPLOAD_MAX_SIZE), task.log)
    transfer.finish(plugin, temp, volname, (checksum[0], checksum[1]) if checksum else None, task.log)
    task.log("download finished")


@operation("vms.move_disk", time_limit=MOVE_TIME_LIMIT)
def move_disk(task: Any, *, plan: dict[str, Any], principal: str, bwlimit: int | None = None) -> None:
    """``qmmove``: a checked move (``vms.services.disk_move.check_move``) under the VM's ``disk`` lock."""
    disk_move.move_disk(disk_move.MovePlan(**plan), owner=task.upid, user=principal, log=task.log, bwlimit=bwlimit)


@operation("vms.migrate", time_limit=MIGRATE_TIME_LIMIT)
def migrate_vm(
    task: Any,
    *,
    plan: dict[str, Any],
    principal: str,
    bwlimit: int | None = None,
    notes: list[str] | None = None,
    migration_type: str | None = None,
    migration_network: str | None = None,
) -> None:
    """``qmigrate``: a checked migration (``vms.services.migration.check_migrate``, its ``notes``
    logged first) under the VM's ``migrate`` lock."""
    for line in notes or []:
        task.log(line)
    migration.migrate_vm(
        migration.MigratePlan(**plan),
        owner=task.upid,
        user=principal,
        log=task.log,
        bwlimit=bwlimit,
        migration_type=migration_type,
        migration_network=migration_network,
    )


@operation("vms.vzdump", time_limit=backup.TIME_LIMIT)
def vzdump(task: Any, *, options: dict[str, Any]) -> None:
    """``vzdump``: the VMs of this node the options select, checked by the API before it queued this."""
    backup.vzdump(options, owner=task.upid, log=task.log, warn=task.warn)


@operation("vms.backup_job", time_limit=backup.TIME_LIMIT)
def backup_job(task: Any, *, jobid: str, options: dict[str, Any], slot: int, missed: bool = False) -> None:
    """A scheduled job's ``vzdump`` run on this node (``vms.jobs.scheduler`` claimed its slot)."""
    late = " (missed while the node was down: repeat-missed)" if missed else ""
    task.log(f"INFO: backup job '{jobid}', scheduled for {time.ctime(slot)}{late}")
    backup.vzdump(options, owner=task.upid, log=task.log, warn=task.warn)
