"""The QEMU side of VM snapshots: disk snapshots of a running VM, its RAM saved to a file.

Upstream QEMU 7.2 has no ``savevm-start`` (a Proxmox patch), so the state is written as
qemu-server's ``suspend --todisk`` could: the vCPUs paused (QMP ``stop`` flushes every disk),
the disks snapshotted, then QEMU's migration stream sent to the state file (``migrate`` to
``exec:cat > FILE``) and the guest resumed. Loading it back is a start with ``-incoming``.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from vms.exceptions import VMError
from vms.qemu import agent, qmp
from vms.runtime_paths import vm_pid

Log = Callable[[str], None]
SAVE_TIMEOUT = 3600.0  # seconds a state save may take
POLL = 0.2


def internal_snapshot(vmid: int, key: str, snap: str, action: str) -> None:
    """An internal qcow2 snapshot of drive ``key`` made (``create``) or removed (``delete``) by QEMU,
    which holds the image open (qemu-img cannot write it while QEMU runs)."""
    command = {"create": "blockdev-snapshot-internal-sync", "delete": "blockdev-snapshot-delete-internal-sync"}
    qmp.command(vmid, command[action], {"device": f"drive-{key}", "name": snap}, timeout=600)


def _argv(vmid: int) -> list[str]:
    pid = vm_pid(vmid)
    if pid is None:
        raise VMError(f"VM {vmid} not running")
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError as exc:
        raise VMError(f"VM {vmid}: unable to read its command line: {exc}") from None


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def current_machine(vmid: int) -> str:
    """The versioned machine type QEMU runs (its ``-machine type=``), as ``runningmachine`` records it."""
    machine = _option(_argv(vmid), "-machine") or ""
    for item in machine.split(","):
        if item.startswith("type="):
            return item.removeprefix("type=")
    raise VMError(f"VM {vmid}: unable to read the current machine type")


def running_cpu(vmid: int) -> str | None:
    """The ``-cpu`` argument of the running QEMU (qemu-server's ``runningcpu``), from its command line."""
    return _option(_argv(vmid), "-cpu")


@contextmanager
def paused(vmid: int, *, freeze: bool, log: Log, warn: Log) -> Iterator[None]:
    """The guest held still for the disk snapshots: its filesystems frozen by the guest agent
    (``freeze``, as qemu-server does with ``agent: 1``) and its vCPUs paused; all undone after."""
    frozen = False
    if freeze:
        try:
            agent.fsfreeze_freeze(vmid)
            frozen = True
            log("guest filesystems frozen (guest agent)")
        except agent.AgentError as exc:
            warn(f"guest-fsfreeze-freeze problems - {exc}")
    was_running = qmp.status(vmid) == "running"
    if was_running:
        qmp.command(vmid, "stop")
    try:
        yield
    finally:
        try:
            if was_running:
                qmp.command(vmid, "cont")
        finally:
            if frozen:
                try:
                    agent.fsfreeze_thaw(vmid)
                except agent.AgentError as exc:
                    warn(f"guest-fsfreeze-thaw problems - {exc}")


def save_state(vmid: int, path: str, *, log: Log, timeout: float = SAVE_TIMEOUT) -> None:
    """QEMU's device state and RAM written to ``path`` (a migration to a file); the VM stays paused."""
    qmp.command(vmid, "migrate", {"uri": f"exec:cat > {shlex.quote(path)}"})
    deadline = time.monotonic() + timeout
    while True:
        info = qmp.command(vmid, "query-migrate")
        status = info.get("status")
        if status == "completed":
            ram = info.get("ram", {})
            log(
                f"completed saving the VM state in {info.get('total-time', 0) / 1000:.1f}s, saved {ram.get('total', 0)} bytes of RAM"
            )
            return
        if status in ("failed", "cancelled"):
            raise VMError(f"unable to save VM state and RAM - {info.get('error-desc', status)}")
        if time.monotonic() > deadline:
            qmp.command(vmid, "migrate_cancel")
            raise VMError("unable to save VM state and RAM - got timeout")
        time.sleep(POLL)


def incoming_args(path: str) -> list[str]:
    """The arguments that make a starting QEMU load its state from ``path``."""
    return ["-incoming", f"exec:cat {shlex.quote(path)}"]


def wait_incoming(vmid: int, *, log: Log, timeout: float = SAVE_TIMEOUT) -> None:
    """Wait until the state is loaded (QEMU leaves ``inmigrate``), then let the guest run on."""
    deadline = time.monotonic() + timeout
    while (state := qmp.status(vmid)) == "inmigrate":
        if time.monotonic() > deadline:
            raise VMError("loading the VM state timed out")
        time.sleep(POLL)
    if state != "running":
        qmp.command(vmid, "cont")
    log("VM state loaded, guest resumed")
