"""Readings of this host and of one QEMU process from /proc and /sys: counters, not rates.

Rates (cpu fractions, bytes per second) need two readings; :mod:`vms.status.collector` keeps the
previous one. Every reader tolerates a process that ends while it is read (None, not an error).
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SYS_NET = Path("/sys/class/net")


def meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes."""
    values: dict[str, int] = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def cpu_times() -> tuple[int, int, int]:
    """(total, idle, iowait) jiffies of all CPUs from ``/proc/stat``."""
    with open("/proc/stat") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle, iowait = fields[3], fields[4] if len(fields) > 4 else 0
    return sum(fields[:8]), idle + iowait, iowait


def uptime() -> float:
    with open("/proc/uptime") as handle:
        return float(handle.read().split()[0])


def boot_time() -> float:
    with open("/proc/stat") as handle:
        for line in handle:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def statvfs(path: str) -> dict[str, int] | None:
    """total/used/avail/free of the filesystem holding ``path``, as Proxmox reports a dir storage."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    total = st.f_blocks * st.f_frsize
    free = st.f_bfree * st.f_frsize
    return {"total": total, "used": total - free, "avail": st.f_bavail * st.f_frsize, "free": free}


@cache
def cpuinfo() -> dict[str, object]:
    """Model, sockets, cores and threads of this host (Proxmox's ``cpuinfo``)."""
    model, flags, mhz, socket = "", "", "0", "0"
    sockets: set[str] = set()
    cores: set[tuple[str, str]] = set()
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name":
                model = value
            elif key == "flags":
                flags = value
            elif key == "cpu MHz":
                mhz = value
            elif key == "physical id":
                socket = value
                sockets.add(value)
            elif key == "core id":
                cores.add((socket, value))
    cpus = os.cpu_count() or 1
    return {
        "model": model,
        "sockets": max(len(sockets), 1),
        "cores": max(len(cores), 1) // max(len(sockets), 1),
        "cpus": cpus,
        "mhz": mhz,
        "hvm": "1" if " vmx" in f" {flags}" or " svm" in f" {flags}" else "0",
        "flags": flags,
        "user_hz": CLOCK_TICKS,
    }


@cache
def qemu_version() -> str:
    """The installed QEMU's version (``running-qemu`` of a VM started now)."""
    try:
        out = subprocess.run(
            ["qemu-system-x86_64", "--version"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    words = out.split()
    return words[3] if len(words) > 3 and words[:3] == ["QEMU", "emulator", "version"] else ""


def kernel() -> dict[str, str]:
    uname = platform.uname()
    return {"sysname": uname.system, "release": uname.release, "version": uname.version, "machine": uname.machine}


@dataclass(frozen=True)
class ProcessSample:
    """One reading of a process: cpu jiffies, resident memory, start time."""

    cpu_ticks: int
    rss: int
    start_ticks: int


def process_sample(pid: int) -> ProcessSample | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat.rpartition(b")")[2].split()  # after the command name, which may hold spaces
    # fields[0] is field 3 (state): utime 14, stime 15, starttime 22, rss 24 (pages)
    return ProcessSample(
        cpu_ticks=int(fields[11]) + int(fields[12]),
        rss=int(fields[21]) * PAGE_SIZE,
        start_ticks=int(fields[19]),
    )


def process_uptime(sample: ProcessSample, host_uptime: float | None = None) -> int:
    return max(int((uptime() if host_uptime is None else host_uptime) - sample.start_ticks / CLOCK_TICKS), 0)


def taps() -> dict[int, list[str]]:
    """vmid -> its tap devices (``tap<vmid>i<n>``), from one listing of /sys/class/net."""
    found: dict[int, list[str]] = {}
    for name in os.listdir(SYS_NET):
        vmid, separator, index = name.removeprefix("tap").partition("i")
        if name.startswith("tap") and separator and vmid.isdigit() and index.isdigit():
            found.setdefault(int(vmid), []).append(name)
    return found


def tap_counters(names: list[str]) -> tuple[int, int]:
    """Bytes the guest received and sent over its taps: the tap's tx is the guest's in."""
    netin = netout = 0
    for path in (SYS_NET / name for name in names):
        try:
            netin += int((path / "statistics" / "tx_bytes").read_text())
            netout += int((path / "statistics" / "rx_bytes").read_text())
        except (OSError, ValueError):
            continue
    return netin, netout


def host_net_counters() -> tuple[int, int]:
    """Bytes received and sent by the host's physical links (not taps, bridges or loopback)."""
    netin = netout = 0
    for path in SYS_NET.iterdir():
        if not (path / "device").exists():
            continue
        try:
            netin += int((path / "statistics" / "rx_bytes").read_text())
            netout += int((path / "statistics" / "tx_bytes").read_text())
        except (OSError, ValueError):
            continue
    return netin, netout
