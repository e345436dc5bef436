"""A VM's network devices on the host: one tap per ``netN``, plugged into the node's Linux bridge.

The tap is created before QEMU starts (QEMU opens it with ``script=no``) and enslaved to the
bridge named by ``bridge=``; ``tag=`` sets the port's VLAN on a VLAN-aware bridge, ``link_down``
keeps it down. Names as Proxmox's: ``tap<vmid>i<index>``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SYS_NET = Path("/sys/class/net")


class NetworkError(RuntimeError):
    """The host refused a network change (no such bridge, no permission ...)."""


def tap_name(vmid: int, index: int) -> str:
    return f"tap{vmid}i{index}"


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")


def is_bridge(name: str) -> bool:
    return (SYS_NET / name / "bridge").is_dir()


def plug_tap(
    ifname: str, bridge: str, *, tag: int | None = None, link_down: bool = False, mtu: int | None = None
) -> None:
    """Create ``ifname`` (replacing a stale one) and attach it to ``bridge``."""
    if not is_bridge(bridge):
        raise NetworkError(f"bridge '{bridge}' does not exist")
    unplug_tap(ifname)
    _ip("tuntap", "add", "dev", ifname, "mode", "tap")
    if mtu is not None:
        _ip("link", "set", "dev", ifname, "mtu", str(mtu))
    _ip("link", "set", "dev", ifname, "master", bridge)
    if tag is not None:
        done = subprocess.run(
            ["bridge", "vlan", "add", "dev", ifname, "vid", str(tag), "pvid", "untagged"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise NetworkError(f"cannot set VLAN {tag} on {ifname}: {done.stderr.strip()}")
    _ip("link", "set", "dev", ifname, "down" if link_down else "up")


def unplug_tap(ifname: str) -> None:
    """Remove ``ifname`` if it exists (QEMU's exit usually removes a tap it held)."""
    if (SYS_NET / ifname).exists():
        _ip("link", "del", "dev", ifname)
