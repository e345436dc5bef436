"""``qm suspend --todisk``: a running VM's RAM and device state saved to a state volume, QEMU ended.

As qemu-server's ``vm_suspend`` with ``includestate``: ``lock: suspending`` while the state is
written (a lease of the task: a task that dies leaves no lock behind), then in one replicated
change ``lock: suspended`` with ``vmstate`` (the volume), ``runningmachine`` and ``runningcpu``;
only then QEMU quits. The next start (``qm start`` or ``qm resume``) loads the state with the same
machine and frees the volume (``vms.qemu.lifecycle.start_vm``). Where qemu-server leaves the
``suspending`` lock after a failed save, this frees the volume, lets the guest run on and drops
the lock: the VM is as it was before the request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from vms.exceptions import VMError, VMLocked
from vms.leases import config_lock
from vms.models import VM, Storage
from vms.qemu import lifecycle, process, qmp, snapshots
from vms.storage import vmstate, volume_path, volumes

Log = Callable[[str], None]


def state_storage(vm: VM, statestorage: str | None) -> Storage:
    """The storage the state goes to: ``statestorage`` if given, else qemu-server's choice."""
    if statestorage:
        storage = Storage.objects.filter(storeid=statestorage).first()
        if storage is None:
            raise VMError(f"storage '{statestorage}' does not exist")
        return storage
    return vmstate.vmstate_storage(vm.config)


def _take(vm: VM, owner: str, skiplock: bool) -> None:
    if vm.lock == "backup":
        raise VMError("cannot suspend to disk during backup")
    if vm.lock and not skiplock:
        raise VMLocked(vm.vmid, vm.lock)
    if not process.is_running(vm.vmid):
        raise lifecycle.NotRunning(vm.vmid)
    vm.lock, vm.lock_owner = "suspending", owner


def suspend_to_disk(
    vmid: int, *, owner: str, log: Log, warn: Log, statestorage: str | None = None, skiplock: bool = False
) -> str:
    """Save the VM's state and end its QEMU; the state volume's id. ``owner``: the task's UPID."""
    with config_lock(vmid):
        vm = lifecycle.update_vm(vmid, lambda vm: _take(vm, owner, skiplock))
        try:
            storage = state_storage(vm, statestorage)
            state = {"runningmachine": snapshots.current_machine(vmid)}
            cpu = snapshots.running_cpu(vmid)
            if cpu:
                state["runningcpu"] = cpu
            label = f"suspend-{time.strftime('%Y-%m-%d')}"
            state["vmstate"] = vmstate.alloc_state_volume(storage, vmid, vm.config, label)
        except BaseException:
            lifecycle.update_vm(vmid, lambda vm: _drop_lock(vm, owner))
            raise
        was_running = qmp.status(vmid) == "running"
        try:
            log(f"saving VM state and RAM using storage '{storage.storeid}'")
            if was_running:
                qmp.command(vmid, "stop")
            snapshots.save_state(vmid, volume_path(state["vmstate"]), log=log)
            lifecycle.update_vm(vmid, lambda vm: _commit(vm, owner, state))
        except BaseException as exc:
            warn(f"suspend to disk failed ({exc}): the VM keeps running")
            _undo(vmid, owner, state["vmstate"], was_running, warn)
            raise
        log(f"VM {vmid} state saved to '{state['vmstate']}', stopping QEMU")
        process.terminate(vmid, timeout=lifecycle.DEFAULT_STOP_TIMEOUT, log=log)
        process.cleanup(vmid, vm.config)
        log(f"VM {vmid} suspended to disk")
        return state["vmstate"]


def _commit(vm: VM, owner: str, state: dict[str, str]) -> None:
    if vm.lock != "suspending" or vm.lock_owner != owner:
        raise VMError("lock changed unexpectedly")
    vm.config = {**vm.config, **state}
    vm.lock, vm.lock_owner = "suspended", ""  # no owner: it outlives the task, until the next start


def _drop_lock(vm: VM, owner: str) -> None:
    if vm.lock_owner == owner:
        vm.lock, vm.lock_owner = "", ""


def _undo(vmid: int, owner: str, state: str, was_running: bool, warn: Log) -> None:
    """A failed save: the state volume freed, the guest running again, the lock dropped."""
    try:
        if process.is_running(vmid):
            qmp.command(vmid, "migrate_cancel")
            if was_running and qmp.status(vmid) != "running":
                qmp.command(vmid, "cont")
    except Exception as exc:
        warn(f"unable to resume the guest: {exc}")
    try:
        volumes.free_volume(state)
    except Exception as exc:
        warn(f"unable to free the state volume '{state}': {exc}")
    lifecycle.update_vm(vmid, lambda vm: _drop_lock(vm, owner))
