"""A running VM's disk copied at one point in time: QMP ``drive-backup`` (``sync=full``) to a raw file.

QEMU's backup job is copy-before-write: from the instant the job starts, a guest write to a
block not yet copied first copies the old block to the target, so the target ends up holding
the disk exactly as it was when the job started, while the guest keeps running. That is what
Proxmox's ``snapshot`` mode relies on (its VMA writer is a patched QEMU target); here the
target is a temporary raw file that the archive writer then streams. A qcow2 internal snapshot
read with ``qemu-img convert -l`` would only work for qcow2 volumes; the job works for every
format and storage. Jobs are started all together (QMP ``transaction``) so several disks share
one point in time; the caller freezes the guest's filesystems around that start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vms.qemu import blockjobs, qmp

Log = Callable[[str], None]
POLL = 0.25
LOG_EVERY = 2.0


def job_id(drive: str) -> str:
    return f"backup-{drive}"


def start(vmid: int, targets: dict[str, str], *, bwlimit: int | None = None) -> None:
    """Start one job per drive id (``drive-scsi0`` -> new raw file path), atomically."""
    actions: list[dict[str, Any]] = []
    for drive, path in targets.items():
        data: dict[str, Any] = {
            "job-id": job_id(drive),
            "device": drive,
            "target": path,
            "format": "raw",
            "sync": "full",
            "mode": "absolute-paths",
            "auto-dismiss": False,
        }
        if bwlimit:
            data["speed"] = int(bwlimit) * 1024
        actions.append({"type": "drive-backup", "data": data})
    qmp.command(vmid, "transaction", {"actions": actions})


def wait(vmid: int, drives: list[str], *, log: Log, timeout: float | None = None) -> None:
    """Until every job is concluded, a progress line every few seconds; raises BlockJobError on a failed job."""
    started = time.monotonic()
    left = list(drives)
    last_logged = 0.0
    try:
        while left:
            now = time.monotonic()
            for drive in list(left):
                entry = blockjobs.job(vmid, job_id(drive))
                if entry is None:
                    raise blockjobs.BlockJobError(f"{drive}: backup job vanished")
                if entry.get("status") in ("concluded", "null"):
                    qmp.command(vmid, "job-dismiss", {"id": job_id(drive)})
                    left.remove(drive)
                    if entry.get("error"):
                        raise blockjobs.BlockJobError(f"{drive}: backup job failed: {entry['error']}")
                    log(blockjobs.progress_line(drive, {**entry, "offset": entry.get("len", 0)}, now - started))
                elif now - last_logged >= LOG_EVERY:
                    log(blockjobs.progress_line(drive, entry, now - started))
                    last_logged = now
            if timeout is not None and time.monotonic() - started > timeout:
                raise blockjobs.BlockJobError(f"backup did not finish within {int(timeout)} s")
            if left:
                time.sleep(POLL)
    except BaseException:
        cancel(vmid, drives)
        raise


def cancel(vmid: int, drives: list[str]) -> None:
    for drive in drives:
        blockjobs.cancel(vmid, job_id(drive))
