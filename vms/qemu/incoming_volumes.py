"""The images a live migration's target allocated for the local disks, remembered until the migration ends.

``start_incoming`` records them (one JSON file per VM in the node's data directory, which
outlives a reboot, unlike the run directory); the resume of a finished migration forgets them
(they are the VM's disks now); the stop of a leftover incoming QEMU frees them. A crash of
either node can leave a record behind with no QEMU at all: :func:`settle` (run by the migration
reconciler) frees the images of a migration that is over without this node owning the VM, and
only forgets them when it does own it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from vms.models import VM

Log = Callable[[str], None]
MIGRATE_LOCK = "migrate"


def _directory() -> Path:
    path = Path(settings.PVE_DATA_DIR) / "migration-copies"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _record(vmid: int) -> Path:
    return _directory() / f"{int(vmid)}.json"


def remember(vmid: int, volids: list[str]) -> None:
    """Written (durably) before QEMU may use the images, so no crash can lose them."""
    path = _record(vmid)
    temp = path.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"volumes": list(volids)}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def forget(vmid: int) -> None:
    _record(vmid).unlink(missing_ok=True)


def recorded(vmid: int) -> list[str]:
    try:
        data = json.loads(_record(vmid).read_text())
        return [str(volid) for volid in data.get("volumes", [])]
    except (OSError, ValueError, AttributeError):
        return []


def free_recorded(vmid: int, free: Callable[[str], None], log: Log) -> list[str]:
    """Free the recorded images (each failure logged, kept in the record); those freed."""
    freed, kept = [], []
    for volid in recorded(vmid):
        try:
            free(volid)
            freed.append(volid)
            log(f"freed '{volid}', a copy of an unfinished migration")
        except Exception as exc:
            kept.append(volid)
            log(f"ERROR: could not free '{volid}': {exc}")
    if kept:
        remember(vmid, kept)
    else:
        forget(vmid)
    return freed


def pending() -> list[int]:
    """The VMIDs with a record on this node."""
    return sorted(int(path.stem) for path in _directory().glob("*.json") if path.stem.isdigit())


def settle(vmid: int, *, running: bool, free: Callable[[str], None], log: Log) -> str:
    """A record whose QEMU is gone: ``"kept"`` (a migration runs, or a QEMU still runs here),
    ``"forgotten"`` (this node owns the VM: the images are its disks), or ``"freed"``."""
    if running:
        return "kept"
    vm = VM.objects.filter(vmid=int(vmid)).first()
    if vm is not None and vm.lock == MIGRATE_LOCK:
        return "kept"
    if vm is not None and vm.node_id == settings.PVE_NODE_NAME:
        forget(vmid)
        return "forgotten"
    free_recorded(vmid, free, log)
    return "freed"
