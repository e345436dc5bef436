"""A minimal real QEMU for the status tests: KVM, no disk of its own, sitting in its firmware.

Started as the runtime starts a VM's QEMU: its pid file and QMP socket in the node's run
directory, ``-pidfile`` naming that pid file (how ``runtime_paths.vm_pid`` knows it is this VM's:
Debian's QEMU has no ``-id``, a Proxmox patch). An empty raw image is its first IDE disk, so
``query-blockstats`` has a device.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from vms import runtime_paths


class FirmwareQemu:
    def __init__(
        self, vmid: int, workdir: Path, *, memory: int = 64, extra: tuple[str, ...] = (), run_dir: Path | None = None
    ) -> None:
        """``run_dir``: another node's ``qemu-server`` run directory (a lab node's), else this node's."""
        self.vmid = vmid
        workdir.mkdir(parents=True, exist_ok=True)
        disk = workdir / f"{vmid}.raw"
        disk.write_bytes(b"")
        if run_dir is None:
            pidfile, qmp = runtime_paths.vm_file(vmid, "pid"), runtime_paths.vm_file(vmid, "qmp")
        else:
            run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            pidfile, qmp = run_dir / f"{vmid}.pid", run_dir / f"{vmid}.qmp"
        for stale in (pidfile, qmp):
            stale.unlink(missing_ok=True)
        argv = [
            "qemu-system-x86_64",
            "-name", f"vm{vmid}",
            "-drive", f"file={disk},format=raw,if=ide",
            "-pidfile", str(pidfile),
            "-qmp", f"unix:{qmp},server=on,wait=off",
            "-nodefaults", "-display", "none", "-machine", "q35,accel=kvm",
            "-m", str(memory),
            *extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and pidfile.read_text().strip() == str(self.process.pid) and qmp.exists()):
            if self.process.poll() is not None:
                raise RuntimeError(f"QEMU {vmid} exited: {self.process.stderr.read().decode()}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise RuntimeError(f"QEMU {vmid} did not write its pid file and QMP socket")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.process.pid

    def pause(self) -> None:
        """SIGSTOP: the process lives, its QMP socket accepts nothing any more (a hung QEMU)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.process.kill()
        self.process.wait(10)
        if self.process.stderr is not None:
            self.process.stderr.close()
