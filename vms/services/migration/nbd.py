"""Local disks of a running VM on the way to the target (qemu-server's live storage migration).

Each local disk the guest has attached is mirrored while the guest runs: the target made a new
image for it and exports it over NBD; the source runs ``drive-mirror`` (``sync=full``,
``mode=existing``, format ``nbd``) onto that export, waits until every mirror is ``ready`` (in
step, further writes copied as they happen), and after the memory migration completed (the
guest paused) ends each mirror without switching, which first copies what is still dirty. Local
volumes not attached (``unusedN``) are streamed like an offline migration's. A local volume a
snapshot refers to stops the migration, as qemu-server: a mirror carries the current state only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vms.exceptions import VMError
from vms.models import VM, Storage
from vms.property_strings import property_string_parse
from vms.qemu import blockjobs, qmp
from vms.qemu.drives import DRIVE_KEY_RE
from vms.qemu.incoming import NbdDisks
from vms.storage import volume_format, volumes

Log = Callable[[str], None]


@dataclass
class LocalDisks:
    """The local volumes of a running VM: attached ones to mirror, the others to stream."""

    mirrored: dict[str, str] = field(default_factory=dict)  # drive key -> source volume id
    targets: NbdDisks = field(default_factory=dict)  # drive key -> (target storage, format, bytes)
    streamed: list[tuple[str, str]] = field(default_factory=list)  # (volume id, target storage)


def _drive_volumes(config: Mapping[str, str]) -> dict[str, str]:
    """Attached disks (no CD-ROM, no ``unusedN``): volume id -> drive key."""
    found: dict[str, str] = {}
    for key, value in config.items():
        if not (DRIVE_KEY_RE.fullmatch(key) or key == "efidisk0"):
            continue
        items = property_string_parse(value, default_key="file")
        if items.get("file") and items.get("media") != "cdrom":
            found[items["file"]] = key
    return found


def _in_snapshots(vm: VM, volids: set[str]) -> bool:
    for snapshot in (vm.snapshots or {}).values():
        for key, value in snapshot.items():
            if not isinstance(value, str):
                continue
            file = value if key == "vmstate" else property_string_parse(value, default_key="file").get("file", "")
            if file in volids:
                return True
    return False


def _sizes(vmid: int) -> dict[str, int]:
    """The running QEMU's virtual size of each drive (``drive-scsi0`` -> bytes): what the target must hold."""
    sizes: dict[str, int] = {}
    for entry in qmp.command(vmid, "query-block"):
        inserted: dict[str, Any] = entry.get("inserted") or {}
        if "image" in inserted:
            sizes[str(entry.get("device", ""))] = int(inserted["image"].get("virtual-size", 0))
    return sizes


def split(vm: VM, copies: list[tuple[str, str]]) -> LocalDisks:
    """Which local volumes (``plan.local_volumes``) are mirrored and which streamed, with target formats."""
    found = LocalDisks()
    if not copies:
        return found
    if _in_snapshots(vm, {volid for volid, _ in copies}):
        raise VMError("online storage migration not possible if non-replicated snapshot exists")
    attached = _drive_volumes(vm.config)
    sizes = _sizes(vm.vmid)
    for volid, storeid in copies:
        key = attached.get(volid)
        if key is None:
            found.streamed.append((volid, storeid))
            continue
        size = sizes.get(f"drive-{key}", 0)
        if size <= 0:
            raise VMError(f"unable to read the size of '{key}' from the running VM")
        storage = Storage.objects.get(storeid=storeid)
        default, supported = volumes.storage_formats(storage)
        fmt = volume_format(volid) if volume_format(volid) in supported else default
        found.mirrored[key] = volid
        found.targets[key] = (storeid, fmt, size)
    return found


class Mirrors:
    """The running ``drive-mirror`` jobs of one migration, ended or cancelled together."""

    def __init__(self, vmid: int, log: Log) -> None:
        self.vmid, self.log = vmid, log
        self.jobs: dict[str, str] = {}  # drive key -> job id

    def start(self, exports: Mapping[str, str], *, bwlimit: int | None) -> None:
        """One mirror per drive onto its NBD URI, then wait until all are in step."""
        started = time.monotonic()
        for key, uri in sorted(exports.items()):
            self.log(f"{key}: start migration to {uri}")
            self.jobs[key] = blockjobs.start_mirror(self.vmid, f"drive-{key}", uri, "nbd", bwlimit=bwlimit)
        for key, job_id in sorted(self.jobs.items()):
            blockjobs.wait_ready(self.vmid, f"drive-{key}", job_id, started, self.log, None)
        self.log("all 'mirror' jobs are ready")

    def finish(self) -> None:
        """After the memory migration (guest paused): the last dirty blocks copied, the jobs ended."""
        for key, job_id in sorted(self.jobs.items()):
            blockjobs.finish_copy(self.vmid, f"drive-{key}", job_id)
            self.log(f"{key}: mirror job finished")
        self.jobs.clear()

    def cancel(self) -> None:
        for key, job_id in sorted(self.jobs.items()):
            blockjobs.cancel(self.vmid, job_id)
            self.log(f"{key}: mirror job cancelled")
        self.jobs.clear()
