"""QEMU block jobs over QMP: a running VM's drive mirrored onto a new image and switched over to it.

As qemu-server's ``qemu_drive_mirror``: ``drive-mirror`` (``sync=full`` onto an image the storage
made, ``mode=existing``), ``query-block-jobs`` polled with a progress line a second
("drive-scsi0: transferred 1.0 GiB of 2.0 GiB (50.00%) in 3s"), once the job is ready
``block-job-complete`` switches the drive to the new image. The job is never dismissed by QEMU
on its own (``auto-dismiss`` off) so its end, and any error it ended with, is read here. On any
failure the job is cancelled and gone before the error is raised: the caller frees the image.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from vms.qemu import qmp

Log = Callable[[str], None]
POLL = 0.25  # seconds between two looks at the job
LOG_EVERY = 1.0  # seconds between two progress lines
UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


class BlockJobError(RuntimeError):
    """A block job that failed, was cancelled or vanished; the job is gone when this is raised."""


def render_bytes(value: float) -> str:
    """``1.0 GiB``, as Proxmox renders sizes in task logs."""
    unit = 0
    while value >= 1024 and unit < len(UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{value:.1f} {UNITS[unit]}"


def job(vmid: int, job_id: str) -> dict[str, Any] | None:
    """The job's entry of ``query-block-jobs`` (None: no such job)."""
    for entry in qmp.command(vmid, "query-block-jobs"):
        if entry.get("device") == job_id:
            return dict(entry)
    return None


def progress_line(drive: str, entry: dict[str, Any], elapsed: float) -> str:
    total, done = int(entry.get("len", 0)), int(entry.get("offset", 0))
    percent = done * 100 / total if total else 100.0
    line = f"{drive}: transferred {render_bytes(done)} of {render_bytes(total)} ({percent:.2f}%) in {int(elapsed)}s"
    return line + (", ready" if entry.get("ready") or entry.get("status") == "ready" else "")


def _dismiss(vmid: int, job_id: str) -> None:
    with contextlib.suppress(qmp.QMPCommandError):  # gone already
        qmp.command(vmid, "job-dismiss", {"id": job_id})


def _wait_concluded(vmid: int, job_id: str, timeout: float) -> dict[str, Any] | None:
    """The job's last entry once QEMU says it is ``concluded`` (then dismissed); None if it vanished."""
    deadline = time.monotonic() + timeout
    while True:
        entry = job(vmid, job_id)
        if entry is None:
            return None
        if entry.get("status") in ("concluded", "null"):
            _dismiss(vmid, job_id)
            return entry
        if time.monotonic() > deadline:
            raise BlockJobError(f"block job '{job_id}' did not end within {int(timeout)} s")
        time.sleep(POLL)


def cancel(vmid: int, job_id: str, *, timeout: float = 60.0) -> None:
    """Cancel a job (forced: also a paused or ready one) and wait until QEMU has ended it."""
    try:
        if job(vmid, job_id) is None:
            return
        qmp.command(vmid, "block-job-cancel", {"device": job_id, "force": True})
    except qmp.QMPCommandError:
        pass  # it ended meanwhile, or QEMU is gone: either way there is nothing to cancel
    with contextlib.suppress(qmp.QMPCommandError):
        _wait_concluded(vmid, job_id, timeout)


def _image_of(vmid: int, drive: str) -> str:
    for entry in qmp.command(vmid, "query-block"):
        if entry.get("device") == drive and "inserted" in entry:
            return str(entry["inserted"].get("file", ""))
    return ""


def start_mirror(vmid: int, drive: str, target: str, target_format: str, *, bwlimit: int | None = None) -> str:
    """``drive-mirror`` of drive ``drive`` onto the existing ``target`` (an image path or an NBD URI with
    format ``nbd``); the job id. ``bwlimit`` in KiB/s."""
    job_id = f"mirror-{drive}"
    arguments: dict[str, Any] = {
        "job-id": job_id,
        "device": drive,
        "target": target,
        "format": target_format,
        "sync": "full",
        "mode": "existing",
        "auto-dismiss": False,
    }
    if bwlimit:
        arguments["speed"] = int(bwlimit) * 1024
    qmp.command(vmid, "drive-mirror", arguments)
    return job_id


def mirror(
    vmid: int,
    drive: str,
    target: str,
    target_format: str,
    *,
    log: Log,
    bwlimit: int | None = None,
    timeout: float | None = None,
    switch: bool = True,
) -> None:
    """Mirror drive ``drive`` (``drive-scsi0``) of running VM ``vmid`` onto the existing image ``target``
    and switch the drive over to it. ``bwlimit`` in KiB/s; ``timeout`` (seconds) for the whole copy.
    ``switch`` False (a clone): the copy is cut off once ready and the drive stays on its image.
    """
    started = time.monotonic()
    job_id = start_mirror(vmid, drive, target, target_format, bwlimit=bwlimit)
    try:
        wait_ready(vmid, drive, job_id, started, log, timeout)
        if not switch:
            _cut_off(vmid, drive, job_id, log)
            log(f"{drive}: copied in {int(time.monotonic() - started)}s")
            return
        log(f"{drive}: mirror ready, switching to the new image")
        qmp.command(vmid, "block-job-complete", {"device": job_id})
        entry = _wait_concluded(vmid, job_id, 60.0)
        if entry is not None and entry.get("error"):
            raise BlockJobError(f"{drive}: mirroring failed: {entry['error']}")
        if _image_of(vmid, drive) != target:
            raise BlockJobError(f"{drive}: QEMU did not switch to the new image")
    except BaseException:
        cancel(vmid, job_id)
        raise
    log(f"{drive}: switched to the new image in {int(time.monotonic() - started)}s")


def finish_copy(vmid: int, drive: str, job_id: str) -> None:
    """End a ready mirror without switching (cancel without force): QEMU first copies what is still
    dirty, so with the guest paused the target then equals the drive."""
    qmp.command(vmid, "block-job-cancel", {"device": job_id})
    entry = _wait_concluded(vmid, job_id, 300.0)
    if entry is None:
        raise BlockJobError(f"{drive}: mirroring job vanished")
    if entry.get("error"):
        raise BlockJobError(f"{drive}: mirroring failed: {entry['error']}")


def _cut_off(vmid: int, drive: str, job_id: str, log: Log) -> None:
    """A ready mirror cancelled without force (qemu-server's clone): the target then holds the drive as it
    was at that instant, taken with the VM's vCPUs paused so the guest writes nothing in between."""
    pause = qmp.status(vmid) == "running"
    if pause:
        log("suspend vm")
        qmp.command(vmid, "stop")
    try:
        finish_copy(vmid, drive, job_id)
    finally:
        if pause:
            qmp.command(vmid, "cont")
            log("resume vm")


def wait_ready(vmid: int, drive: str, job_id: str, started: float, log: Log, timeout: float | None) -> None:
    last_line, last_logged = "", 0.0
    while True:
        entry = job(vmid, job_id)
        if entry is None:
            raise BlockJobError(f"{drive}: mirroring job seems to have died")
        if entry.get("status") == "concluded":
            _dismiss(vmid, job_id)
            raise BlockJobError(f"{drive}: mirroring ended early: {entry.get('error') or 'cancelled'}")
        now = time.monotonic()
        line = progress_line(drive, entry, now - started)
        ready = bool(entry.get("ready")) or entry.get("status") == "ready"
        if ready or (line != last_line and now - last_logged >= LOG_EVERY):
            log(line)
            last_line, last_logged = line, now
        if ready:
            return
        if timeout is not None and now - started > timeout:
            raise BlockJobError(f"{drive}: mirroring did not finish within {int(timeout)} s")
        time.sleep(POLL)
