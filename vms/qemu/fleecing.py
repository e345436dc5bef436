"""A running VM's disks read at one point in time while it runs, without copying them first: image fleecing.

For each drive a temporary qcow2 overlay is added whose backing is the drive's own node, and a
backup job with ``sync=none`` runs from the drive into it: copy-before-write, so a guest write to
a block first copies the block's old content into the overlay, and nothing else is copied. The
overlays, exported read-only over NBD on a private unix socket, read as the disks were when the
jobs started (all in one QMP ``transaction``, inside the caller's fs-freeze), and ``nbdcopy``
(libnbd) streams an export straight into the archive's compressor. Proxmox calls this backup
fleecing; its default, a backup job into the archive writer, needs its patched QEMU. The overlay
holds only the blocks the guest rewrote during the backup. ``close`` ends the jobs, the NBD
server and the overlays, whatever happened.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import IO

from vms.qemu import blockjobs, qmp
from vms.storage import qemu_img


def job_id(drive: str) -> str:
    return f"fleecing-{drive}"


def node_name(drive: str) -> str:
    return f"fleece-{drive}"


class Fleece:
    """The fleecing of ``drives`` (``drive-scsi0`` -> size in bytes) of VM ``vmid``, overlays under ``tmpdir``
    (which must be root's only: the NBD socket there reads the guest's disks)."""

    def __init__(self, vmid: int, drives: dict[str, int], tmpdir: Path) -> None:
        self.vmid, self.drives, self.tmpdir = vmid, dict(drives), tmpdir
        self.socket = str(tmpdir / "fleece.nbd")
        self._added: list[str] = []
        self._exported: list[str] = []
        self._jobs: list[str] = []
        self._server = False
        self._readers: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        """Overlays, the jobs (one instant for all drives) and the exports; QMPCommandError if QEMU refuses."""
        nodes = {
            entry["device"]: entry.get("inserted", {}).get("node-name")
            for entry in qmp.command(self.vmid, "query-block")
        }
        for drive, size in self.drives.items():
            if not nodes.get(drive):
                raise qmp.QMPCommandError(f"{drive}: no block node to fleece")
            overlay = str(self.tmpdir / f"{node_name(drive)}.qcow2")
            qemu_img.create(overlay, "qcow2", size)
            qmp.command(
                self.vmid,
                "blockdev-add",
                {
                    "driver": "qcow2",
                    "node-name": node_name(drive),
                    "file": {"driver": "file", "filename": overlay},
                    "backing": nodes[drive],
                },
            )
            self._added.append(drive)
        actions = [
            {
                "type": "blockdev-backup",
                "data": {"job-id": job_id(d), "device": d, "target": node_name(d), "sync": "none"},
            }
            for d in self.drives
        ]
        qmp.command(self.vmid, "transaction", {"actions": actions})
        self._jobs = list(self.drives)
        # QEMU creates the socket: it is private because ``tmpdir`` is (the caller's 0700 work directory)
        qmp.command(self.vmid, "nbd-server-start", {"addr": {"type": "unix", "data": {"path": self.socket}}})
        self._server = True
        for drive in self.drives:
            qmp.command(self.vmid, "nbd-server-add", {"device": node_name(drive), "name": drive, "writable": False})
            self._exported.append(drive)

    def reader(self, drive: str) -> IO[bytes]:
        """The disk as it was at the start, as a stream of exactly its size (``nbdcopy`` to a pipe)."""
        uri = f"nbd+unix:///{drive}?socket={self.socket}"
        process = subprocess.Popen(["nbdcopy", uri, "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._readers.append(process)
        assert process.stdout is not None
        return process.stdout

    def check_readers(self) -> None:
        """Raise if an ``nbdcopy`` failed (its stream then ended early)."""
        for process in self._readers:
            code = process.wait()
            if code != 0:
                detail = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
                raise qmp.QMPCommandError(f"reading the fleecing export failed: {detail or code}")

    def close(self) -> None:
        for process in self._readers:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        for drive in self._exported:
            with contextlib.suppress(qmp.QMPCommandError):
                qmp.command(self.vmid, "nbd-server-remove", {"name": drive, "mode": "hard"})
        if self._server:
            with contextlib.suppress(qmp.QMPCommandError):
                qmp.command(self.vmid, "nbd-server-stop")
        for drive in self._jobs:
            with contextlib.suppress(blockjobs.BlockJobError, qmp.QMPCommandError):
                blockjobs.cancel(self.vmid, job_id(drive))
        for drive in self._added:
            with contextlib.suppress(qmp.QMPCommandError):
                qmp.command(self.vmid, "blockdev-del", {"node-name": node_name(drive)})
            Path(self.tmpdir / f"{node_name(drive)}.qcow2").unlink(missing_ok=True)
        Path(self.socket).unlink(missing_ok=True)
        self._readers, self._exported, self._jobs, self._added, self._server = [], [], [], [], False
