"""The power operations as task operations (run by the VM node's Celery worker under their UPID).

Registered by name when ``vms.operations`` is discovered; the API and ``qm`` submit them with
``portal.tasks.runner.submit`` on the VM's node, and they log to the task log.
"""

from __future__ import annotations

from typing import Any

from portal.models import Task
from portal.tasks import runner
from portal.tasks.registry import operation
from vms.qemu import hibernate, incoming, lifecycle

START_LIMIT = 600  # seconds: a start waits at most its timeout (<= 600 s by the API) for QMP
STOP_LIMIT = 3600  # a shutdown may wait long for its guest
SAVE_LIMIT = 3660  # a suspend to disk writes the RAM (snapshots.SAVE_TIMEOUT) and stops QEMU


@operation("qemu.start", time_limit=START_LIMIT + 60)
def start(task: Any, *, vmid: int, skiplock: bool = False, timeout: float | None = None) -> None:
    lifecycle.start_vm(vmid, log=task.log, skiplock=skiplock, timeout=timeout)


@operation("qemu.stop", time_limit=STOP_LIMIT)
def stop(
    task: Any, *, vmid: int, skiplock: bool = False, timeout: float | None = None, overrule_shutdown: bool = False
) -> None:
    if overrule_shutdown:
        abort_shutdowns(vmid, task)
    lifecycle.stop_vm(vmid, log=task.log, skiplock=skiplock, timeout=timeout)


def abort_shutdowns(vmid: int, task: Any) -> None:
    """``overrule-shutdown``: stop this VM's running ``qmshutdown`` tasks first (they hold its lock)."""
    for upid in Task.objects.filter(type="qmshutdown", vmid=str(vmid), status__in=Task.ACTIVE).values_list(
        "upid", flat=True
    ):
        task.log(f"overruling shutdown task {upid}")
        runner.stop(upid)


@operation("qemu.shutdown", time_limit=STOP_LIMIT)
def shutdown(
    task: Any, *, vmid: int, skiplock: bool = False, timeout: float | None = None, force_stop: bool = False
) -> None:
    lifecycle.shutdown_vm(vmid, log=task.log, warn=task.warn, skiplock=skiplock, timeout=timeout, force_stop=force_stop)


@operation("qemu.reboot", time_limit=STOP_LIMIT)
def reboot(task: Any, *, vmid: int, timeout: float | None = None) -> None:
    lifecycle.reboot_vm(vmid, log=task.log, timeout=timeout)


@operation("qemu.reset", time_limit=120)
def reset(task: Any, *, vmid: int, skiplock: bool = False) -> None:
    lifecycle.reset_vm(vmid, log=task.log, skiplock=skiplock)


@operation("qemu.suspend", time_limit=120)
def suspend(task: Any, *, vmid: int, skiplock: bool = False) -> None:
    lifecycle.suspend_vm(vmid, log=task.log, skiplock=skiplock)


@operation("qemu.suspend_todisk", time_limit=SAVE_LIMIT)
def suspend_todisk(task: Any, *, vmid: int, skiplock: bool = False, statestorage: str | None = None) -> None:
    hibernate.suspend_to_disk(
        vmid, owner=task.upid, log=task.log, warn=task.warn, statestorage=statestorage, skiplock=skiplock
    )


@operation("qemu.resume", time_limit=START_LIMIT + 60)
def resume(task: Any, *, vmid: int, skiplock: bool = False) -> None:
    """A paused VM's vCPUs continued; a VM suspended to disk started from its saved state."""
    lifecycle.resume_vm(vmid, log=task.log, skiplock=skiplock)


@operation("qemu.start_incoming", time_limit=START_LIMIT + 60)
def start_incoming(
    task: Any,
    *,
    vmid: int,
    migratedfrom: str,
    stateuri: str,
    machine: str = "",
    network: str | None = None,
    nbd_disks: str = "",
) -> None:
    """The target's half of a live migration, asked by the source's migration task through this node's API."""
    incoming.start_incoming(
        vmid,
        migratedfrom=migratedfrom,
        stateuri=stateuri,
        machine=machine,
        network=network,
        log=task.log,
        disks=incoming.parse_nbd_disks(nbd_disks),
    )


@operation("qemu.stop_incoming", time_limit=120)
def stop_incoming(task: Any, *, vmid: int, migratedfrom: str) -> None:
    incoming.stop_incoming(vmid, migratedfrom=migratedfrom, log=task.log)


@operation("qemu.resume_incoming", time_limit=120)
def resume_incoming(task: Any, *, vmid: int) -> None:
    """``resume --nocheck``: the migrated guest continued once the moved config reached this node."""
    incoming.resume_incoming(vmid, log=task.log)


@operation("qemu.startall", time_limit=24 * 3600)
def startall(task: Any) -> None:
    lifecycle.start_all(log=task.log, warn=task.warn)
