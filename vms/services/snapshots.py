"""VM snapshots, as qemu-server's ``snapshot_create``, ``snapshot_delete`` and ``snapshot_rollback``.

Each runs on the VM's node in steps, every config write under the node's config lock: the
config first records the operation (the VM's ``lock`` as a lease of the task, ``snapstate`` on
the snapshot), then the volumes are changed without holding the config lock, then the config
records the outcome. Disks: internal qcow2 snapshots (QEMU makes them while it runs, qemu-img
when stopped) and btrfs subvolume snapshots. With ``vmstate`` the RAM of a running VM goes to a
state volume ``vm-<vmid>-state-<snap>``; a rollback to it starts QEMU from that state.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import transaction

from cluster.services import log_cluster_message
from replicator.exceptions import ConflictError
from vms import lookups
from vms.exceptions import StorageError, VMError, VMLocked
from vms.leases import config_lock
from vms.models import VM
from vms.property_strings import shown
from vms.qemu import lifecycle, process, snapshots
from vms.snapshot_config import check_snapname, config_after_rollback, snapshot_of, unlink_parent
from vms.storage import VolumeError, qemu_img, resolve, vmstate, volume_path, volumes
from vms.storage.btrfs import BtrfsPlugin, is_subvolume
from vms.storage.vmstate import drive_volumes

Log = Callable[[str], None]
ATTEMPTS = 5
ROLLBACK_STOP_TIMEOUT = 5.0


def _quiet(line: str) -> None:
    pass


def log_request(message: str, user: str) -> None:
    """The cluster log entry of a snapshot request (qemu-server's ``log_msg``)."""
    with transaction.atomic(using="cluster"):
        log_cluster_message(message, user=user)


def has_snapshot(volid: str, snapname: str) -> bool:
    """Whether the (stopped VM's) volume holds snapshot ``snapname``: a btrfs subvolume, or a qcow2 internal one."""
    _storage, plugin, volume = resolve(volid)
    if isinstance(plugin, BtrfsPlugin):
        return is_subvolume(plugin._subvolume(volume, snapname))
    data = qemu_img.info(plugin.path(volume), volume.format)
    return any(entry.get("name") == snapname for entry in data.get("snapshots", []))


def _check_feature(config: dict[str, str]) -> None:
    """Every disk must be able to snapshot: qcow2 (internal snapshots) or on btrfs."""
    for _key, volid in drive_volumes(config):
        try:
            _storage, plugin, volume = resolve(volid)
        except VolumeError:
            raise VMError("snapshot feature is not available") from None
        if plugin.type != "btrfs" and volume.format != "qcow2":
            raise VMError("snapshot feature is not available")


def _qcow2(volid: str) -> bool:
    return resolve(volid)[2].format == "qcow2" and resolve(volid)[1].type != "btrfs"


def _save(vm: VM, message: str | None = None, user: str = "") -> None:
    with transaction.atomic(using="cluster"):
        vm.save()
        if message:
            log_cluster_message(message, user=user)


def _update(vmid: int, change: Callable[[VM], None]) -> VM:
    """Apply ``change`` to the freshly read VM under its config lock and store it (re-read on a conflict)."""
    with config_lock(vmid):
        for _attempt in range(ATTEMPTS):
            vm = lookups.get_vm(vmid, settings.PVE_NODE_NAME)
            change(vm)
            try:
                _save(vm)
                return vm
            except ConflictError:
                continue
    raise ConflictError(f"VM {vmid}: its configuration keeps changing")


def _snapshot(vm: VM, snapname: str) -> dict[str, str]:
    snap = (vm.snapshots or {}).get(snapname)
    if snap is None:
        raise VMError(f"snapshot '{shown(snapname)}' does not exist")
    return snap


def _expect_lock(vm: VM, lock: str, owner: str) -> None:
    if vm.lock != lock or vm.lock_owner != owner:
        raise VMError(f"encountered invalid lock, expected '{lock}'")


def _release(vm: VM, owner: str) -> None:
    if vm.lock_owner == owner:
        vm.lock, vm.lock_owner = "", ""


def list_snapshots(vm: VM) -> list[dict[str, Any]]:
    """The API's list: each snapshot, then ``current`` ("You are here!")."""
    result: list[dict[str, Any]] = []
    for name, snap in sorted((vm.snapshots or {}).items()):
        item: dict[str, Any] = {
            "name": name,
            "snaptime": int(snap.get("snaptime", "0") or 0),
            "vmstate": 1 if snap.get("vmstate") else 0,
            "description": snap.get("description", ""),
        }
        for key in ("parent", "snapstate"):
            if snap.get(key):
                item[key] = snap[key]
        result.append(item)
    current: dict[str, Any] = {
        "name": "current",
        "digest": vm.digest,
        "running": 1 if process.is_running(vm.vmid) else 0,
        "description": "You are here!",
    }
    if vm.config.get("parent"):
        current["parent"] = vm.config["parent"]
    result.append(current)
    return result


def update_description(vm: VM, snapname: str, description: str) -> None:
    """``PUT .../snapshot/{snap}/config``: a snapshot's description (refused while the VM is locked)."""

    def change(vm: VM) -> None:
        if vm.lock:
            raise VMLocked(vm.vmid, vm.lock)
        snap = _snapshot(vm, snapname)
        if description:
            snap["description"] = description
        else:
            snap.pop("description", None)

    _update(vm.vmid, change)


# --- create --------------------------------------------------------------------------------------


def _prepare(vmid: int, snapname: str, *, description: str, owner: str, warn: Log) -> VM:
    def change(vm: VM) -> None:
        if vm.config.get("template") == "1":
            raise VMError("you can't take a snapshot if it's a template")
        if vm.lock:
            raise VMLocked(vm.vmid, vm.lock)
        vm.snapshots = dict(vm.snapshots or {})
        if snapname in vm.snapshots:
            raise VMError(f"snapshot name '{snapname}' already used")
        _check_feature(vm.config)
        for name, other in sorted(vm.snapshots.items()):
            if other.get("parent") == snapname:
                warn(f"deleting parent '{snapname}' reference from '{name}' to avoid bogus snapshot cycle.")
                vm.snapshots[name] = {k: v for k, v in other.items() if k != "parent"}
        snap = {**snapshot_of(vm.config), "snapstate": "prepare", "snaptime": str(int(time.time()))}
        if description:
            snap["description"] = description
        vm.snapshots[snapname] = snap
        vm.lock, vm.lock_owner = "snapshot", owner

    return _update(vmid, change)


def _add_vmstate(vm: VM, snapname: str, snap: dict[str, str]) -> dict[str, str]:
    """The state volume allocated (twice the RAM plus room for the devices) and recorded with the
    machine and CPU QEMU runs, which a rollback to the state must start it with."""
    state = {"runningmachine": snapshots.current_machine(vm.vmid)}
    cpu = snapshots.running_cpu(vm.vmid)
    if cpu:
        state["runningcpu"] = cpu
    state["vmstate"] = vmstate.alloc_state_volume(vmstate.vmstate_storage(vm.config), vm.vmid, vm.config, snapname)
    snap = {**snap, **state}
    try:
        _update(vm.vmid, lambda vm: vm.snapshots.__setitem__(snapname, {**vm.snapshots[snapname], **state}))
    except BaseException:
        volumes.free_volume(state["vmstate"])
        raise
    return snap


def _snapshot_volumes(vmid: int, snapname: str, snap: dict[str, str], done: list[tuple[str, str]], log: Log) -> None:
    running = process.is_running(vmid)
    for key, volid in drive_volumes(snap):
        log(f"snapshotting 'drive-{key}' ({volid})")
        if running and _qcow2(volid):
            snapshots.internal_snapshot(vmid, key, snapname, "create")
        else:
            volumes.snapshot_volume(volid, snapname, "create")
        done.append((key, volid))


def create_snapshot(
    vmid: int, snapname: str, *, owner: str, vmstate: bool = False, description: str = "", log: Log, warn: Log = _quiet
) -> None:
    """``qm snapshot``: the disks (and with ``vmstate``, the running VM's RAM) captured as ``snapname``."""
    check_snapname(snapname)
    vm = _prepare(vmid, snapname, description=description, owner=owner, warn=warn)
    snap = vm.snapshots[snapname]
    done: list[tuple[str, str]] = []
    try:
        if vmstate and process.is_running(vmid):
            snap = _add_vmstate(vm, snapname, snap)
        if process.is_running(vmid):
            freeze = not snap.get("vmstate") and str(vm.config.get("agent", "0")).split(",")[0] in ("1", "enabled=1")
            with snapshots.paused(vmid, freeze=freeze, log=log, warn=warn):
                _snapshot_volumes(vmid, snapname, snap, done, log)
                if snap.get("vmstate"):
                    log(f"saving VM state and RAM using storage '{snap['vmstate'].partition(':')[0]}'")
                    snapshots.save_state(vmid, volume_path(snap["vmstate"]), log=log)
        else:
            _snapshot_volumes(vmid, snapname, snap, done, log)
    except Exception:
        warn("snapshot create failed: starting cleanup")
        _undo_create(vmid, snapname, snap, done, owner, warn)
        raise

    def commit(vm: VM) -> None:
        _expect_lock(vm, "snapshot", owner)
        snap = dict(_snapshot(vm, snapname))
        if snap.pop("snapstate", None) != "prepare":
            raise VMError("wrong snapshot state")
        vm.snapshots = {**vm.snapshots, snapname: snap}
        vm.config = {**vm.config, "parent": snapname}
        _release(vm, owner)

    _update(vmid, commit)
    log(f"snapshot '{snapname}' created")


def _undo_create(
    vmid: int, snapname: str, snap: dict[str, str], done: list[tuple[str, str]], owner: str, warn: Log
) -> None:
    for key, volid in done:
        try:
            _delete_volume_snapshot(vmid, key, volid, snapname)
        except Exception as exc:
            warn(f"unable to remove the snapshot of '{volid}': {exc}")
    if snap.get("vmstate"):
        try:
            volumes.free_volume(snap["vmstate"])
        except Exception as exc:
            warn(f"unable to free the state volume '{snap['vmstate']}': {exc}")

    def forget(vm: VM) -> None:
        vm.snapshots = {k: v for k, v in (vm.snapshots or {}).items() if k != snapname}
        _release(vm, owner)

    _update(vmid, forget)


# --- delete --------------------------------------------------------------------------------------


def _delete_volume_snapshot(vmid: int, key: str, volid: str, snapname: str) -> None:
    if process.is_running(vmid) and _qcow2(volid):
        snapshots.internal_snapshot(vmid, key, snapname, "delete")
    else:
        volumes.snapshot_volume(volid, snapname, "delete")


def delete_snapshot(vmid: int, snapname: str, *, owner: str, force: bool = False, log: Log, warn: Log = _quiet) -> None:
    """``qm delsnapshot``: the state volume and every disk snapshot removed, then the section.

    ``force``: the section goes even when removing a disk snapshot fails (warned). Without it a
    failure leaves the snapshot in ``snapstate: delete`` with what was removed taken off it.
    """

    def prepare(vm: VM) -> None:
        snap = _snapshot(vm, snapname)
        if vm.config.get("template") == "1":
            raise VMError("you can't delete a snapshot if vm is a template")
        if vm.lock:
            raise VMLocked(vm.vmid, vm.lock)
        vm.snapshots = {**vm.snapshots, snapname: {**snap, "snapstate": "delete"}}
        vm.lock, vm.lock_owner = "snapshot-delete", owner

    snap = _update(vmid, prepare).snapshots[snapname]
    try:
        removed: list[str] = []
        if snap.get("vmstate"):
            _try(lambda: volumes.free_volume(snap["vmstate"]), force, warn)
            removed.append("vmstate")
        for key, volid in drive_volumes(snap):
            log(f"removing snapshot of '{volid}'")
            _try(lambda key=key, volid=volid: _delete_volume_snapshot(vmid, key, volid, snapname), force, warn)  # type: ignore[misc]
            removed.append(key)
    except Exception:
        _update(vmid, lambda vm: _forget_keys(vm, snapname, removed, owner))
        raise

    def cleanup(vm: VM) -> None:
        _expect_lock(vm, "snapshot-delete", owner)
        _snapshot(vm, snapname)
        snaps = {name: dict(s) for name, s in vm.snapshots.items()}
        config = dict(vm.config)
        unlink_parent(snaps, config, snapname)
        del snaps[snapname]
        vm.snapshots, vm.config = snaps, config
        _release(vm, owner)

    _update(vmid, cleanup)
    log(f"snapshot '{snapname}' removed")


def _try(action: Callable[[], None], force: bool, warn: Log) -> None:
    try:
        action()
    except Exception as exc:
        if not force:
            raise
        warn(str(exc))


def _forget_keys(vm: VM, snapname: str, keys: list[str], owner: str) -> None:
    """After a failed delete: what was removed no longer named by the snapshot; the lock released."""
    snap = (vm.snapshots or {}).get(snapname)
    if snap is not None:
        vm.snapshots = {**vm.snapshots, snapname: {k: v for k, v in snap.items() if k not in keys}}
    _release(vm, owner)


# --- rollback ------------------------------------------------------------------------------------


@contextmanager
def _rollback_lock(vmid: int, snapname: str, owner: str, log: Log) -> Iterator[dict[str, str]]:
    def prepare(vm: VM) -> None:
        if vm.config.get("template") == "1":
            raise VMError("you can't rollback if vm is a template")
        snap = _snapshot(vm, snapname)
        if snap.get("snapstate"):
            raise VMError(f"unable to rollback to incomplete snapshot (snapstate = {snap['snapstate']})")
        if vm.lock:
            raise VMLocked(vm.vmid, vm.lock)
        for _key, volid in drive_volumes(snap):
            if not has_snapshot(volid, snapname):
                raise StorageError(f"snapshot '{snapname}' of volume '{volid}' does not exist")
        if process.is_running(vmid):
            raise VMError(f"unable to rollback vm {vmid}: vm is running")
        vm.lock, vm.lock_owner = "rollback", owner

    vm = _update(vmid, prepare)
    try:
        yield vm.snapshots[snapname]
    except BaseException:
        _update(vmid, lambda vm: _release(vm, owner))
        raise


def rollback_snapshot(vmid: int, snapname: str, *, owner: str, start: bool = False, log: Log) -> None:
    """``qm rollback``: the VM stopped, its disks and config as in the snapshot; started from the
    snapshot's RAM when it has one, else started when ``start``."""
    vm = lookups.get_vm(vmid, settings.PVE_NODE_NAME)
    _snapshot(vm, snapname)
    if vm.lock:
        raise VMLocked(vm.vmid, vm.lock)
    if process.is_running(vmid):
        lifecycle.stop_vm(vmid, log=log, timeout=ROLLBACK_STOP_TIMEOUT)
    with _rollback_lock(vmid, snapname, owner, log) as snap:
        for _key, volid in drive_volumes(snap):
            log(f"rolling back '{volid}' to '{snapname}'")
            volumes.snapshot_volume(volid, snapname, "rollback")

    def apply(vm: VM) -> None:
        _expect_lock(vm, "rollback", owner)
        snap = _snapshot(vm, snapname)
        in_snapshot = {volid for _key, volid in drive_volumes(snap)}
        config = config_after_rollback(vm.config, snap, snapname)
        taken = {k for k in config if k.startswith("unused")}
        for _key, volid in drive_volumes(vm.config):
            if volid not in in_snapshot and volid not in config.values():
                key = next(f"unused{i}" for i in range(256) if f"unused{i}" not in taken)
                taken.add(key)
                config[key] = volid
        if config.get("vmgenid", "0") not in ("0", "1"):
            config["vmgenid"] = str(uuid.uuid4())  # another generation: the guest may react to it
        vm.config = config
        _release(vm, owner)

    _update(vmid, apply)
    log(f"rolled back to snapshot '{snapname}'")
    if snap.get("vmstate"):
        lifecycle.start_vm(vmid, log=log, statefile=volume_path(snap["vmstate"]), machine=snap.get("runningmachine"))
    elif start:
        lifecycle.start_vm(vmid, log=log)
