"""Long-running VM operations: the work of a task, logged to its task log.

The API runs these inline under a UPID (``qmcreate``, ``qmdestroy``) once every check has
answered; they act for the request's user, so they are not registered for workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from replicator.exceptions import ConflictError
from vms import services
from vms.models import VM


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
