"""The VM lock as a task lease: the config's ``lock`` plus ``lock_owner`` (the holding task's UPID);
and the node-local config lock (``config_lock``) every power operation holds, as qemu-server's flock.

Taking and dropping it are replicated writes with the row's version as base, so of two tasks
racing for one VM exactly one wins (the other's write is a conflict, re-read, and refused as
locked); a config edit in between only makes the writer re-read and try again.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from replicator.exceptions import ConflictError
from vms.exceptions import VMError, VMLocked, VMNotFound
from vms.models import VM

ATTEMPTS = 5


def _vm(key: str) -> VM:
    vm = VM.objects.filter(vmid=int(key)).first()
    if vm is None:
        raise VMNotFound(int(key), settings.PVE_NODE_NAME)
    return vm


class VMLocks:
    """``portal.tasks.locks`` provider for kind ``vm`` (key: the vmid)."""

    def check(self, key: str) -> None:
        vm = _vm(key)
        if vm.lock:
            raise VMLocked(vm.vmid, vm.lock)

    def acquire(self, key: str, reason: str, owner: str) -> None:
        if not owner:
            raise ValueError("a lease needs an owner (the task's UPID)")
        for _attempt in range(ATTEMPTS):
            vm = _vm(key)
            if vm.lock:
                if vm.lock_owner == owner:
                    return
                raise VMLocked(vm.vmid, vm.lock)
            vm.lock, vm.lock_owner = reason, owner
            try:
                vm.save(update_fields=["lock", "lock_owner"])
                return
            except ConflictError:
                continue  # the row changed since it was read: read it again
        raise ConflictError(f"unable to lock VM {key}: its configuration keeps changing")

    def release(self, key: str, owner: str) -> bool:
        if not owner:  # a lock set by hand has no owner and is only removed by hand (qm unlock)
            return False
        for _attempt in range(ATTEMPTS):
            vm = VM.objects.filter(vmid=int(key)).first()
            if vm is None or vm.lock_owner != owner:
                return False
            vm.lock, vm.lock_owner = "", ""
            try:
                vm.save(update_fields=["lock", "lock_owner"])
                return True
            except ConflictError:
                continue
        raise ConflictError(f"unable to unlock VM {key}: its configuration keeps changing")

    def held(self) -> Iterable[tuple[str, str]]:
        return [
            (str(vmid), owner) for vmid, owner in VM.objects.exclude(lock_owner="").values_list("vmid", "lock_owner")
        ]


@contextmanager
def task_lease(vmid: int, reason: str, owner: str) -> Iterator[None]:
    """The VM's ``lock: <reason>`` held by task ``owner`` (taken again by its owner: a no-op) until the block ends."""
    from portal.tasks import locks

    spec = locks.LockSpec("vm", str(vmid), reason)
    locks.acquire(spec, owner)
    try:
        yield
    finally:
        locks.release(spec, owner)


CONFIG_LOCK_TIMEOUT = 10.0  # seconds, as qemu-server's lock_config


class ConfigLockTimeout(VMLocked):
    """Another operation of this node holds the VM's config lock for longer than we wait."""

    def __init__(self, vmid: int) -> None:
        VMError.__init__(self, f"can't lock file '{config_lock_path(vmid)}' - got timeout")


def config_lock_path(vmid: int) -> Path:
    return Path(settings.PVE_RUN_DIR) / "lock" / f"lock-{int(vmid)}.conf"


@contextmanager
def config_lock(vmid: int, timeout: float = CONFIG_LOCK_TIMEOUT, *, shared: bool = False) -> Iterator[None]:
    """The node-local lock on a VM (qemu-server's ``lock_config``: a flock on its lock file).

    Held for the whole of a power operation, so two of them never interleave on one VM; the
    kernel drops it when its process dies, so a killed task never leaves it behind. ``timeout``
    0 tries once (the watcher: skip a VM an operation is busy with). ``shared``: qemu-server's
    ``lock_config_shared`` (a clone of a stopped VM), held together with other shared holders.
    """
    path = config_lock_path(vmid)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ConfigLockTimeout(vmid) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
