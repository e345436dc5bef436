"""Long-running VM operations: the work of a task, logged to its task log.

The API runs these inline under a UPID (``qmcreate``, ``qmdestroy``) once every check has
answered; they act for the request's user, so they are not registered for workers. A URL
download (``download``) is queued for this node's worker: it needs no user's privileges to run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

from portal.tasks.registry import operation
from replicator.exceptions import ConflictError
from vms import services
from vms.models import VM, Storage
from vms.qemu import operations as qemu_operations  # noqa: F401  (discovered with this module: the power operations)
from vms.storage import transfer, volumes

DOWNLOAD_TIME_LIMIT = 6 * 3600


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
