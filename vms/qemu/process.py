"""One QEMU per VM on this node: launch it daemonized in its own process group, wait for QMP, end it, clean up.

QEMU runs under a transient systemd scope (``systemd-run --scope``) when systemd is PID 1, else
in a session of its own (``setsid``; ``-daemonize`` detaches it from the launching task, so a
worker restart never takes VMs down). Its pid file and sockets follow ``vms.runtime_paths``;
they are created with umask 077 inside the 0700 run directory.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from vms import network
from vms.cloudinit import image as cloudinit_image
from vms.qemu import qmp
from vms.qemu.command import OVMF, QEMU_BINARY, Host, build_command
from vms.runtime_paths import KINDS, run_dir, vm_file, vm_pid
from vms.storage import volume_format, volume_path

Log = Callable[[str], None]
SYSTEMD_RUN = "/usr/bin/systemd-run"


class StartError(RuntimeError):
    """QEMU did not start, or did not answer on QMP in time."""


@functools.lru_cache(maxsize=1)
def qemu_version() -> str:
    """This node's QEMU version (``7.2.22``), from ``qemu-system-x86_64 --version``."""
    done = subprocess.run([QEMU_BINARY, "--version"], capture_output=True, text=True, check=True, timeout=30)
    match = re.search(r"version (\d+\.\d+(\.\d+)?)", done.stdout)
    if match is None:
        raise StartError(f"unable to read the QEMU version from {done.stdout.strip()!r}")
    return match.group(1)


def kvm_usable() -> bool:
    """Whether /dev/kvm can be opened for reading and writing (the device exists and we may use it)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def host() -> Host:
    return Host(kvm=kvm_usable(), qemu_version=qemu_version(), vhost_net=os.path.exists("/dev/vhost-net"))


def resolve_volume(volid: str) -> tuple[str, str]:
    return volume_path(volid), volume_format(volid)


def temp_efivars(vmid: int) -> Path:
    """The EFI vars of an OVMF VM without ``efidisk0``: a copy for this run only (as qemu-server warns)."""
    return run_dir() / f"{int(vmid)}.efivars"


def command_for(vmid: int, config: Mapping[str, str], *, on_host: Host | None = None) -> list[str]:
    """The QEMU argv of VM ``vmid`` on this node (what ``qm showcmd`` prints)."""
    return build_command(
        vmid,
        config,
        host=on_host or host(),
        files=lambda kind: str(vm_file(vmid, kind)),
        resolve=resolve_volume,
        temp_efivars=str(temp_efivars(vmid)),
        cloudinit_image=str(cloudinit_image.image_path(vmid)),
    )


def is_running(vmid: int) -> bool:
    return vm_pid(vmid) is not None


def running_vmids() -> set[int]:
    """VMs with a live QEMU on this node (their pid file names a QEMU started for them)."""
    found = set()
    for path in run_dir().glob("*.pid"):
        if path.stem.isdigit() and vm_pid(int(path.stem)) is not None:
            found.add(int(path.stem))
    return found


def _systemd_is_init() -> bool:
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd" and os.access(SYSTEMD_RUN, os.X_OK)
    except OSError:
        return False


def plug_taps(vmid: int, config: Mapping[str, str], log: Log) -> None:
    """A tap per bridged ``netN``, in its bridge, before QEMU opens it (``script=no``)."""
    from vms.config import _net_parts

    for key in sorted(k for k in config if re.fullmatch(r"net\d+", k)):
        _model, _mac, options = _net_parts(config[key])
        if "bridge" not in options:
            continue
        ifname = network.tap_name(vmid, int(key[3:]))
        network.plug_tap(
            ifname,
            options["bridge"],
            tag=int(options["tag"]) if "tag" in options else None,
            link_down=options.get("link_down") == "1",
            mtu=int(options["mtu"]) if options.get("mtu", "0") != "0" else None,
        )
        log(f"{key}: {ifname} plugged into {options['bridge']}")


def launch(vmid: int, argv: list[str], *, timeout: float, log: Log) -> int:
    """Run ``argv`` (ends in a daemonized QEMU), then wait until QMP answers; QEMU's pid."""
    for kind in KINDS:
        if kind != "pid":
            vm_file(vmid, kind).unlink(missing_ok=True)
    if "-drive" in argv and any(str(temp_efivars(vmid)) in arg for arg in argv):
        efitype = "4m" if any("OVMF_CODE_4M" in arg for arg in argv) else "2m"
        shutil.copyfile(OVMF[f"vars-{efitype}"], temp_efivars(vmid))
        os.chmod(temp_efivars(vmid), 0o600)
        log("WARN: no efidisk configured! Using temporary efivars disk.")
    wrapper: list[str] = []
    if _systemd_is_init():
        wrapper = [SYSTEMD_RUN, "--scope", "--slice", "qemu.slice", "--unit", str(vmid), "--quiet"]
    try:
        done = subprocess.run(
            wrapper + argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            umask=0o077,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise StartError(f"start failed: QEMU did not come up within {timeout:g} s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        raise StartError(f"start failed: QEMU exited with code {done.returncode}: {detail}")
    deadline = time.monotonic() + timeout
    while True:
        pid = vm_pid(vmid)
        try:
            if pid is not None:
                qmp.status(vmid, timeout=max(1.0, min(5.0, deadline - time.monotonic())))
                _private_sockets(vmid)
                return pid
        except qmp.QMPCommandError as exc:
            if time.monotonic() > deadline:
                raise StartError(f"start failed: QMP does not answer: {exc}") from None
        if pid is None and time.monotonic() > deadline:
            raise StartError("start failed: QEMU's pid file names no running QEMU")
        time.sleep(0.05)


def _private_sockets(vmid: int) -> None:
    """QEMU daemonizes with umask 027: its sockets become root's only (the directory is 0700 too)."""
    for kind in KINDS:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(vm_file(vmid, kind), 0o600)


def wait_exit(vmid: int, timeout: float) -> bool:
    """Whether the VM's QEMU is gone within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while vm_pid(vmid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(vmid: int, *, timeout: float, log: Log) -> None:
    """Hard stop: QMP ``quit``, then SIGTERM, then SIGKILL, each given ``timeout`` (qemu-server's order)."""
    pid = vm_pid(vmid)
    if pid is None:
        return
    with contextlib.suppress(qmp.QMPCommandError):
        qmp.command(vmid, "quit", timeout=min(timeout, 5.0))
    if wait_exit(vmid, timeout):
        return
    for signum, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGKILL, "SIGKILL")):
        pid = vm_pid(vmid)
        if pid is None:
            return
        log(f"VM {vmid} still running - terminating now with {name}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        if wait_exit(vmid, timeout if signum == signal.SIGTERM else 10):
            return
    raise RuntimeError(f"VM {vmid} QEMU process {pid} does not die")


def cleanup(vmid: int, config: Mapping[str, str]) -> list[str]:
    """After QEMU exited: remove its taps, sockets, pid file and temporary EFI vars; what was removed."""
    removed: list[str] = []
    taps = {network.tap_name(vmid, int(key[3:])) for key in config if re.fullmatch(r"net\d+", key)}
    taps |= {path.name for path in network.SYS_NET.glob(f"tap{int(vmid)}i*")}
    for ifname in sorted(taps):
        if (network.SYS_NET / ifname).exists():
            with contextlib.suppress(network.NetworkError):
                network.unplug_tap(ifname)
                removed.append(ifname)
    for path in [vm_file(vmid, kind) for kind in KINDS] + [temp_efivars(vmid), cloudinit_image.image_path(vmid)]:
        if path.exists() or path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
