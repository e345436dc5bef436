"""Where a VM's runtime files live on its node: ``<PVE_RUN_DIR>/qemu-server/<vmid>.<kind>``.

One place for the QEMU pid file and the QMP, VNC, guest-agent and serial sockets, so the
runtime, the status collector, the agent client and the console find the same files. The
directory is root's only (0700): a socket there is a way into the guest.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

KINDS = ("pid", "qmp", "vnc", "qga", "serial0", "serial1", "serial2", "serial3")


def run_dir() -> Path:
    """The node's ``qemu-server`` run directory, created 0700 on first use."""
    path = Path(settings.PVE_RUN_DIR) / "qemu-server"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def vm_file(vmid: int, kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown runtime file kind {kind!r}")
    return run_dir() / f"{int(vmid)}.{kind}"


def vm_pid(vmid: int) -> int | None:
    """The pid of the VM's running QEMU, or None: the pid file's process must be alive and be
    QEMU started for this VM, so a stale file whose pid was reused by another process never
    counts. Its command line holds ``-id <vmid>`` (Proxmox's patched QEMU) or, with upstream
    QEMU (which has no ``-id``), ``-pidfile`` naming this very pid file."""
    pidfile = vm_file(vmid, "pid")
    try:
        pid = int(pidfile.read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    wanted = {(b"-id", str(int(vmid)).encode()), (b"-pidfile", str(pidfile).encode())}
    for index, arg in enumerate(argv[:-1]):
        if (arg, argv[index + 1]) in wanted:
            return pid
    return None


def pause_marker(vmid: int) -> Path:
    """Left by ``qm suspend`` (removed by ``qm resume``): this QEMU was paused on purpose, so the
    migration reconciler does not take it for a migrated guest waiting to be resumed."""
    return run_dir() / f"{int(vmid)}.paused"
