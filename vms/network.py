"""A VM's network devices on the host: one tap per ``netN``, plugged into the node's Linux bridge.

The tap is created before QEMU starts (QEMU opens it with ``script=no``) and enslaved to the
bridge named by ``bridge=``; ``tag=`` sets the port's VLAN on a VLAN-aware bridge, ``link_down``
keeps it down. Names as Proxmox's: ``tap<vmid>i<index>``.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

SYS_NET = Path("/sys/class/net")
log = logging.getLogger(__name__)


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
    ifname: str,
    bridge: str,
    *,
    tag: int | None = None,
    link_down: bool = False,
    mtu: int | None = None,
    rate: float | None = None,
) -> None:
    """Create ``ifname`` (replacing a stale one) and attach it to ``bridge``; ``rate`` in MB/s."""
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
    if rate is not None:
        set_rate(ifname, rate)
    _ip("link", "set", "dev", ifname, "down" if link_down else "up")


def _tc(*args: str, check: bool = True) -> None:
    done = subprocess.run(["tc", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise NetworkError(f"tc {' '.join(args)}: {done.stderr.strip() or done.returncode}")


def set_rate(ifname: str, rate: float | None) -> None:
    """Limit the tap to ``rate`` MB/s each way, as Proxmox's ``rate=`` (None or 0: no limit).

    What the guest sends arrives on the tap's ingress (policed, excess dropped); what it receives
    leaves through the tap's egress (a token bucket). Bursts of 1 MiB, as Proxmox allows.
    """
    if rate is not None and (rate < 0 or rate != rate):
        raise NetworkError(f"invalid rate {rate!r}")
    _tc("qdisc", "del", "dev", ifname, "handle", "ffff:", "ingress", check=False)
    _tc("qdisc", "del", "dev", ifname, "root", check=False)
    if not rate:
        return
    limit = f"{int(rate * 1024 * 1024)}bps"
    burst = f"{1024 * 1024}b"
    _tc("qdisc", "add", "dev", ifname, "root", "tbf", "rate", limit, "burst", burst, "latency", "25ms")
    _tc("qdisc", "add", "dev", ifname, "handle", "ffff:", "ingress")
    try:
        _tc(
            "filter", "add", "dev", ifname, "parent", "ffff:", "prio", "50", "basic",
            "police", "rate", limit, "burst", burst, "mtu", "64kb", "drop",
        )  # fmt: skip
    except NetworkError as exc:  # a kernel built without tc classifiers: only the egress limit holds
        _tc("qdisc", "del", "dev", ifname, "handle", "ffff:", "ingress", check=False)
        log.warning("%s: what the guest sends is not limited (%s)", ifname, exc)


def unplug_tap(ifname: str) -> None:
    """Remove ``ifname`` if it exists (QEMU's exit usually removes a tap it held)."""
    if (SYS_NET / ifname).exists():
        _ip("link", "del", "dev", ifname)
