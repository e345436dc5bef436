"""The power operations of one VM on its node, as qemu-server runs them (``vm_start``, ``vm_stop`` ...).

Each runs under the VM's node-local config lock (``vms.leases.config_lock``: qemu-server's
``lock_config``) and refuses a VM whose config carries a ``lock`` (``VM 100 is locked (backup)``)
unless ``skiplock`` (root@pam only, checked by the caller). Taps are plugged before QEMU starts
and everything a run leaves (taps, sockets, pid file) is removed once QEMU is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from django.conf import settings
from django.db import transaction

from cluster.services import log_cluster_message
from replicator.exceptions import ConflictError
from vms import lookups
from vms.cloudinit import image as cloudinit_image
from vms.exceptions import VMError, VMLocked
from vms.leases import config_lock
from vms.models import VM
from vms.property_strings import property_string_format, property_string_parse
from vms.qemu import agent, process, qmp, snapshots
from vms.qemu.command import resolve_machine, windows
from vms.runtime_paths import pause_marker
from vms.storage import volume_path, volumes

Log = Callable[[str], None]
DEFAULT_START_TIMEOUT = 30.0  # seconds until QMP answers (qemu-server's default for a VM without hugepages)
DEFAULT_STOP_TIMEOUT = 60.0  # seconds QEMU gets to quit or the guest to power off (qemu-server's default)
HIBERNATION_KEYS = ("vmstate", "runningmachine", "runningcpu")  # a suspend to disk's config keys


class NotRunning(VMError):
    def __init__(self, vmid: int) -> None:
        super().__init__(f"VM {vmid} not running")


class AlreadyRunning(VMError):
    def __init__(self, vmid: int) -> None:
        super().__init__(f"VM {vmid} already running")


def start_timeout(config: Mapping[str, str]) -> float:
    """qemu-server's default: ``max(30, memory in GiB)`` seconds."""
    memory = str(config.get("memory", "512")).removeprefix("current=")
    return max(DEFAULT_START_TIMEOUT, int(memory) / 1024 if memory.isdigit() else 0)


def local_vm(vmid: int) -> VM:
    """The VM, which must belong to this node (operations only run where the VM lives)."""
    return lookups.get_vm(int(vmid), settings.PVE_NODE_NAME)


def check_lock(vm: VM, *, skiplock: bool) -> None:
    if vm.lock and not skiplock:
        raise VMLocked(vm.vmid, vm.lock)


def _pin_at_first_start(vm: VM, log: Log) -> VM:
    """Record ``meta: creation-qemu`` (and pin a Windows guest's machine) at the first start, as
    qemu-server does at creation: later starts keep the same virtual hardware."""
    for _attempt in range(5):
        config = dict(vm.config)
        changed = []
        if not config.get("meta"):
            config["meta"] = property_string_format(
                {"creation-qemu": process.qemu_version(), "ctime": str(int(time.time()))}
            )
            changed.append("meta")
        machine = property_string_parse(config["machine"], default_key="type") if config.get("machine") else {}
        if windows(config) and machine.get("type", "pc") in ("pc", "q35"):
            machine["type"] = resolve_machine(config, process.qemu_version())
            config["machine"] = property_string_format(machine, default_key="type")
            log(f"pinning machine type to '{machine['type']}' for Windows guest OS")
            changed.append("machine")
        if not changed:
            return vm
        vm.config = config
        try:
            with transaction.atomic(using="cluster"):
                log_cluster_message(f"VM {vm.vmid}: {', '.join(changed)} recorded at first start", user="root@pam")
                vm.save(update_fields=["config"])
            return vm
        except ConflictError:
            vm = local_vm(vm.vmid)
    raise ConflictError(f"VM {vm.vmid}: its configuration keeps changing")


def _start(vm: VM, *, log: Log, timeout: float, statefile: str | None = None, machine: str | None = None) -> int:
    """``statefile``: load the guest's saved state (a snapshot's RAM) with the ``machine`` it ran."""
    if vm.config.get("template") == "1":
        raise VMError("you can't start a vm if it's a template")
    if process.is_running(vm.vmid):
        raise AlreadyRunning(vm.vmid)
    vm = _pin_at_first_start(vm, log)
    host = process.host()
    config = {**vm.config, "machine": machine} if machine else vm.config
    argv = process.command_for(vm.vmid, config, on_host=host)
    if statefile:
        argv += snapshots.incoming_args(statefile)
        log(f"loading the VM state from '{statefile}'")
    if not host.kvm:
        log("KVM is not available (/dev/kvm is not usable): running with TCG, software emulation (slow)")
    elif vm.config.get("kvm") == "0":
        log("kvm disabled in the VM config: running with TCG, software emulation (slow)")
    try:
        if cloudinit_image.generate(vm.vmid, config):
            log("generated the cloud-init image (NoCloud)")
        process.plug_taps(vm.vmid, vm.config, log)
        pid = process.launch(vm.vmid, argv, timeout=timeout, log=log)
        if statefile:
            snapshots.wait_incoming(vm.vmid, log=log)
    except Exception:
        process.terminate(vm.vmid, timeout=5, log=log)
        process.cleanup(vm.vmid, vm.config)
        raise
    log(f"VM {vm.vmid} started (QEMU pid {pid})")
    return pid


def _stop(vm: VM, *, log: Log, timeout: float, shutdown: bool, force: bool) -> None:
    """qemu-server's ``_do_vm_stop``: ``quit`` or the guest's power button, wait, then signals."""
    if not process.is_running(vm.vmid):
        process.cleanup(vm.vmid, vm.config)
        return
    if shutdown:
        if not _agent_shutdown(vm, log, timeout):
            log(f"shutting down VM {vm.vmid} (ACPI power button)")
            try:
                qmp.command(vm.vmid, "system_powerdown")
            except qmp.QMPCommandError:
                if process.is_running(vm.vmid):
                    raise  # else the guest went down on its own meanwhile
        if not process.wait_exit(vm.vmid, timeout):
            if not force:
                raise VMError("VM quit/powerdown failed - got timeout")
            log("VM still running - terminating now")
            process.terminate(vm.vmid, timeout=5, log=log)
    else:
        process.terminate(vm.vmid, timeout=timeout, log=log)
    removed = process.cleanup(vm.vmid, vm.config)
    if removed:
        log(f"cleaned up: {', '.join(removed)}")


def _agent_shutdown(vm: VM, log: Log, timeout: float) -> bool:
    """With ``agent: 1``, ask the guest agent (``guest-shutdown``), as qemu-server does; whether it was asked.

    When the agent does not answer, the caller falls back to the ACPI power button.
    """
    enabled = str(vm.config.get("agent", "0")).split(",")[0].removeprefix("enabled=") == "1"
    if not enabled:
        return False
    try:
        agent.shutdown(vm.vmid, timeout=min(timeout, 10.0))
    except Exception as exc:  # the agent's errors (not running, no answer): fall back to ACPI
        log(f"guest agent shutdown failed ({exc}); using the ACPI power button")
        return False
    log(f"shutting down VM {vm.vmid} (guest agent)")
    return True


def start_vm(
    vmid: int,
    *,
    log: Log,
    skiplock: bool = False,
    timeout: float | None = None,
    statefile: str | None = None,
    machine: str | None = None,
) -> int:
    """``qm start``: QEMU running and answering QMP; its pid. ``statefile``/``machine``: see ``_start``.

    A VM suspended to disk (``lock: suspended``, its state in ``vmstate``) resumes from that
    state, with the machine it ran, whatever its lock; the state volume is freed once loaded.
    """
    with config_lock(vmid):
        vm = local_vm(vmid)
        hibernated = statefile is None and (vm.lock == "suspended" or bool(vm.config.get("vmstate")))
        if not hibernated:
            check_lock(vm, skiplock=skiplock)
            return _start(
                vm, log=log, timeout=timeout or start_timeout(vm.config), statefile=statefile, machine=machine
            )
        if vm.lock and vm.lock != "suspended" and not skiplock:
            raise VMLocked(vm.vmid, vm.lock)
        if not vm.config.get("vmstate"):
            raise VMError(f"VM {vmid} is suspended to disk, but its config names no state volume")
        state = vm.config["vmstate"]
        log(f"resuming VM {vmid} from its saved state '{state}'")
        pid = _start(
            vm,
            log=log,
            timeout=timeout or start_timeout(vm.config),
            statefile=volume_path(state),
            machine=vm.config.get("runningmachine"),
        )
        _forget_saved_state(vmid, state, log)
        return pid


def update_vm(vmid: int, change: Callable[[VM], None]) -> VM:
    """``change`` applied to the freshly read local VM and stored (config and lock), re-read on a conflict."""
    for _attempt in range(5):
        vm = local_vm(vmid)
        change(vm)
        try:
            with transaction.atomic(using="cluster"):
                vm.save(update_fields=["config", "lock", "lock_owner"])
            return vm
        except ConflictError:
            continue
    raise ConflictError(f"VM {vmid}: its configuration keeps changing")


def _forget_saved_state(vmid: int, state: str, log: Log) -> None:
    """After a resume from disk: the state keys and the ``suspended`` lock dropped, the volume freed."""

    def forget(vm: VM) -> None:
        vm.config = {k: v for k, v in vm.config.items() if k not in HIBERNATION_KEYS}
        if vm.lock == "suspended":
            vm.lock, vm.lock_owner = "", ""

    update_vm(vmid, forget)
    try:
        volumes.free_volume(state)
        log(f"freed the state volume '{state}'")
    except Exception as exc:  # the guest runs: a leftover volume is only a warning
        log(f"WARN: unable to free the state volume '{state}': {exc}")


def stop_vm(vmid: int, *, log: Log, skiplock: bool = False, timeout: float | None = None) -> None:
    """``qm stop``: hard stop (no guest involvement); a VM that is not running is left as it is."""
    with config_lock(vmid):
        vm = local_vm(vmid)
        check_lock(vm, skiplock=skiplock)
        _stop(vm, log=log, timeout=timeout or DEFAULT_STOP_TIMEOUT, shutdown=False, force=True)


def shutdown_vm(
    vmid: int, *, log: Log, warn: Log, skiplock: bool = False, timeout: float | None = None, force_stop: bool = False
) -> None:
    """``qm shutdown``: ask the guest (ACPI), wait ``timeout``; then stop it (``forceStop``) or fail."""
    with config_lock(vmid):
        vm = local_vm(vmid)
        check_lock(vm, skiplock=skiplock)
        shutdown = True
        if process.is_running(vmid) and qmp.status(vmid) in ("paused", "suspended", "prelaunch"):
            if not force_stop:
                raise VMError("VM is paused - cannot shutdown")
            warn("VM is paused - stop immediately")
            shutdown = False
        _stop(vm, log=log, timeout=timeout or DEFAULT_STOP_TIMEOUT, shutdown=shutdown, force=force_stop)


def reboot_vm(vmid: int, *, log: Log, timeout: float | None = None) -> None:
    """``qm reboot``: a clean shutdown (failing on timeout), then a start with the current config."""
    with config_lock(vmid):
        vm = local_vm(vmid)
        check_lock(vm, skiplock=False)
        if not process.is_running(vmid):
            raise NotRunning(vmid)
        if qmp.status(vmid) in ("paused", "suspended", "prelaunch"):
            raise VMError("VM is paused - cannot reboot")
        _stop(vm, log=log, timeout=timeout or DEFAULT_STOP_TIMEOUT, shutdown=True, force=False)
        _start(local_vm(vmid), log=log, timeout=start_timeout(vm.config))


def _monitor(vmid: int, command: str, *, log: Log, skiplock: bool, done: str) -> None:
    with config_lock(vmid):
        vm = local_vm(vmid)
        check_lock(vm, skiplock=skiplock)
        if not process.is_running(vmid):
            raise NotRunning(vmid)
        qmp.command(vmid, command)
        log(done.format(vmid=vmid))


def reset_vm(vmid: int, *, log: Log, skiplock: bool = False) -> None:
    _monitor(vmid, "system_reset", log=log, skiplock=skiplock, done="VM {vmid} reset")


def suspend_vm(vmid: int, *, log: Log, skiplock: bool = False) -> None:
    """``qm suspend`` without ``todisk``: the vCPUs paused (QMP ``stop``), memory kept."""
    _monitor(vmid, "stop", log=log, skiplock=skiplock, done="VM {vmid} paused")
    pause_marker(vmid).touch()  # not to be resumed as a migration leftover


def resume_vm(vmid: int, *, log: Log, skiplock: bool = False) -> None:
    """``qm resume``: the vCPUs continued; a VM suspended to disk is started from its state instead."""
    if local_vm(vmid).lock == "suspended" and not process.is_running(vmid):
        start_vm(vmid, log=log, skiplock=skiplock)
        return
    _monitor(vmid, "cont", log=log, skiplock=skiplock, done="VM {vmid} resumed")
    pause_marker(vmid).unlink(missing_ok=True)


def startup_order(vms: list[VM]) -> list[tuple[VM, Mapping[str, str]]]:
    """``onboot`` VMs in ``startup: order=`` order (unordered ones last, then by VMID), with their startup items."""
    chosen = []
    for vm in vms:
        if vm.config.get("onboot") != "1" or vm.config.get("template") == "1":
            continue
        try:
            items = (
                property_string_parse(vm.config.get("startup", ""), default_key="order")
                if vm.config.get("startup")
                else {}
            )
        except ValueError:
            items = {}
        chosen.append((vm, items))
    return sorted(chosen, key=lambda pair: (int(pair[1].get("order", "0") or 0) or 2**31, pair[0].vmid))


def start_all(*, log: Log, warn: Log, sleep: Callable[[float], None] = time.sleep) -> None:
    """Proxmox's ``startall`` at node start: each ``onboot`` VM in order, waiting its ``up`` seconds."""
    for vm, items in startup_order(list(VM.objects.filter(node_id=settings.PVE_NODE_NAME))):
        if process.is_running(vm.vmid):
            continue
        log(f"Starting VM {vm.vmid}")
        try:
            start_vm(vm.vmid, log=log)
        except Exception as exc:
            warn(f"Starting VM {vm.vmid} failed: {exc}")
            continue
        up = items.get("up", "")
        if up.isdigit() and int(up) > 0:
            log(f"Waiting for {up} seconds (startup delay)")
            sleep(int(up))
