"""Start the test guest (or an empty VM) under real QEMU with the runtime contract's sockets.

A hand-written minimal command line that follows the contract every QEMU of this project keeps
(``-pidfile`` (Debian's QEMU has no ``-id``; ``vm_pid`` also knows a VM by its pid file), ``-qmp unix:...,server=on,wait=off``, ``-vnc unix:...,password=on``
and, with the agent, a virtio-serial port ``org.qemu.guest_agent.0`` on a chardev socket at the
``qga`` path), so ``vms.runtime_paths.vm_pid`` and the agent client find the VM. The serial
console goes to a file, which is how a test sees the guest's "ready" line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.guest.image import READY, GuestImage
from vms.qemu.process import kvm_usable

QEMU = "qemu-system-x86_64"
DEFAULT_MAC = "BC:24:11:00:00:01"


def accelerator() -> str:
    """``$PVE_TEST_GUEST_ACCEL`` (kvm or tcg), TCG by default: on these machines (nested KVM under
    Firecracker) a Linux guest under KVM hangs in the kernel's decompressor, under TCG it boots."""
    accel = os.environ.get("PVE_TEST_GUEST_ACCEL", "tcg")
    if accel not in ("kvm", "tcg"):
        raise ValueError(f"PVE_TEST_GUEST_ACCEL must be kvm or tcg, got {accel!r}")
    return "kvm" if accel == "kvm" and kvm_usable() else "tcg"


def runtime_file(run_dir: Path, vmid: int, kind: str) -> Path:
    """``<run_dir>/<vmid>.<kind>``: the runtime contract's layout, for any node's run directory."""
    return run_dir / f"{int(vmid)}.{kind}"


def default_run_dir() -> Path:
    """The session node's ``qemu-server`` run directory (``vms.runtime_paths``)."""
    from vms import runtime_paths

    return runtime_paths.run_dir()


def guest_command(
    vmid: int,
    run_dir: Path,
    console: Path,
    *,
    image: GuestImage | None,
    agent: bool = True,
    agent_in_guest: bool = True,
    mac: str = DEFAULT_MAC,
    memory: int = 256,
    disk: Path | None = None,
) -> list[str]:
    """The QEMU command line: with ``image`` the guest boots its kernel, without it the VM sits in
    its firmware (a running VM with no OS). ``agent_in_guest=False`` boots the guest without qemu-ga."""
    path = lambda kind: str(runtime_file(run_dir, vmid, kind))  # noqa: E731
    argv = [
        QEMU,
        "-name",
        f"test-guest-{vmid}",
        "-no-user-config",
        "-nodefaults",
        "-machine",
        f"pc,accel={accelerator()}",
        "-m",
        str(memory),
        "-cpu",
        "host,-arch-capabilities" if accelerator() == "kvm" else "qemu64",
        "-smp",
        "1",
        "-pidfile",
        path("pid"),
        "-qmp",
        f"unix:{path('qmp')},server=on,wait=off",
        "-vnc",
        f"unix:{path('vnc')},password=on",
        "-display",
        "none",
        "-serial",
        f"file:{console}",
        "-netdev",
        "user,id=net0,restrict=on",
        "-device",
        f"virtio-net-pci,netdev=net0,mac={mac}",
    ]
    if disk is not None:
        argv += ["-drive", f"file={disk},if=virtio,format=raw,cache=none"]
    if agent:
        argv += [
            "-chardev",
            f"socket,path={path('qga')},server=on,wait=off,id=qga0",
            "-device",
            "virtio-serial,id=qga0",
            "-device",
            "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        ]
    if image is not None:
        append = "console=ttyS0 panic=-1 loglevel=4" + ("" if agent_in_guest else " pve.noagent")
        argv += ["-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", append]
    return argv


@dataclass
class GuestVM:
    """One QEMU process of a test: its VMID, sockets, console file and process."""

    vmid: int
    run_dir: Path
    console: Path
    process: subprocess.Popen[bytes]
    booting: bool
    argv: list[str] = field(default_factory=list)

    def path(self, kind: str) -> Path:
        return runtime_file(self.run_dir, self.vmid, kind)

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def wait_for_console(self, text: str, timeout: float = 120) -> str:
        """The console line holding ``text``, once the guest printed it (QEMU must stay up meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.console_text().splitlines():
                if text in line:
                    return line
            if self.process.poll() is not None:
                raise AssertionError(f"QEMU exited ({self.process.returncode}) before {text!r}: {self.console_text()}")
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} on the console within {timeout}s: {self.console_text()[-3000:]}")

    def wait_ready(self, timeout: float = 120) -> str:
        """The guest's ready line (``PVE-TEST-GUEST: ready <kernel release>``)."""
        return self.wait_for_console(READY, timeout)

    def wait_sockets(self, timeout: float = 30) -> None:
        """Until QEMU listens on its QMP socket (and wrote its pid file)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"QEMU exited ({self.process.returncode}): {self.argv}")
            if self.path("pid").exists() and self.path("qmp").exists():
                return
            time.sleep(0.05)
        raise AssertionError("QEMU did not create its QMP socket")

    def qmp(self, command: str, arguments: dict | None = None, timeout: float = 10) -> dict:
        """One QMP command on a fresh connection (greeting, capabilities, command); its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.path("qmp")))
            stream = sock.makefile("rwb")
            json.loads(stream.readline())  # greeting
            for request in ({"execute": "qmp_capabilities"}, {"execute": command, "arguments": arguments or {}}):
                stream.write(json.dumps(request).encode() + b"\n")
                stream.flush()
                while True:
                    answer = json.loads(stream.readline())
                    if "event" not in answer:
                        break
            return answer

    def wait_exit(self, timeout: float = 60) -> int:
        """QEMU's exit status once it has exited on its own."""
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Kill QEMU if it still runs and remove its runtime files."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        for kind in ("pid", "qmp", "vnc", "qga"):
            self.path(kind).unlink(missing_ok=True)


def start_guest(
    vmid: int,
    image: GuestImage | None,
    *,
    run_dir: Path | None = None,
    console: Path | None = None,
    agent: bool = True,
    agent_in_guest: bool = True,
    mac: str = DEFAULT_MAC,
    memory: int = 256,
    disk: Path | None = None,
) -> GuestVM:
    """Start QEMU for ``vmid`` in its own process group and wait for its QMP socket.

    ``image`` None starts a VM with no OS (it stays in its firmware). ``run_dir`` defaults to the
    session node's; the console file to ``<run_dir>/<vmid>.console.log``. ``disk``: a raw image the
    guest sees as /dev/vda and mounts on /mnt/data (formatting it ext2 when it holds no filesystem).
    """
    run_dir = run_dir or default_run_dir()
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    console = console or run_dir / f"{vmid}.console.log"
    console.unlink(missing_ok=True)
    for kind in ("pid", "qmp", "vnc", "qga"):
        runtime_file(run_dir, vmid, kind).unlink(missing_ok=True)
    argv = guest_command(
        vmid,
        run_dir,
        console,
        image=image,
        agent=agent,
        agent_in_guest=agent_in_guest,
        mac=mac,
        memory=memory,
        disk=disk,
    )
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    guest = GuestVM(vmid=vmid, run_dir=run_dir, console=console, process=process, booting=image is not None, argv=argv)
    try:
        guest.wait_sockets()
    except BaseException:
        guest.stop()
        raise
    return guest
