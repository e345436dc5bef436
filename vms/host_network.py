"""This node's network interfaces as ``/nodes/{node}/network`` shows them, read from the kernel.

Proxmox reads ``/etc/network/interfaces``; here the running configuration is the source
(``ip -j -d addr``), so what is listed is what exists. Bridges, bonds, VLANs and the physical
(or physical-looking, ``eth*``/``en*``) links are shown; taps, veths and the loopback are not.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from typing import Any

PHYSICAL_NAME = re.compile(r"^(?:eth\d+|en[^:.]+|ib[^:.]+)$")
TYPES = (
    "bridge", "bond", "eth", "alias", "vlan", "OVSBridge", "OVSBond", "OVSPort", "OVSIntPort",
    "vnet", "any_bridge", "any_local_bridge", "include_sdn",
)  # fmt: skip
BOND_MODES = {"0": "balance-rr", "1": "active-backup", "2": "balance-xor", "3": "broadcast", "4": "802.3ad"}


class NetworkInfoError(RuntimeError):
    """``ip`` could not be run or answered something unreadable."""


def _links() -> list[dict[str, Any]]:
    try:
        done = subprocess.run(["ip", "-j", "-d", "addr", "show"], capture_output=True, text=True, timeout=10)
        return list(json.loads(done.stdout or "[]"))
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise NetworkInfoError(f"cannot read the network interfaces: {exc}") from exc


def _kind(link: dict[str, Any]) -> str | None:
    kind = (link.get("linkinfo") or {}).get("info_kind")
    if kind in ("bridge", "bond", "vlan"):
        return str(kind)
    if kind is None and PHYSICAL_NAME.match(link["ifname"]):
        return "eth"
    if kind == "veth" and PHYSICAL_NAME.match(link["ifname"]):
        return "eth"  # a container's or lab node's uplink
    return None


def _entry(link: dict[str, Any], kind: str, links: list[dict[str, Any]]) -> dict[str, Any]:
    name = link["ifname"]
    info = (link.get("linkinfo") or {}).get("info_data") or {}
    entry: dict[str, Any] = {
        "iface": name,
        "type": kind,
        "active": int("UP" in link.get("flags", [])),
        "autostart": 1,
        "exists": 1,
        "families": [],
        "method": "manual",
        "method6": "manual",
        "priority": int(link.get("ifindex", 0)),
    }
    if link.get("mtu"):
        entry["mtu"] = int(link["mtu"])
    for address in link.get("addr_info", []):
        network = ipaddress.ip_interface(f"{address['local']}/{address['prefixlen']}")
        if address.get("family") == "inet" and "address" not in entry:
            entry.update(address=address["local"], netmask=str(network.netmask), cidr=str(network), method="static")
            entry["families"].append("inet")
        elif address.get("family") == "inet6" and address.get("scope") == "global" and "address6" not in entry:
            entry.update(address6=address["local"], netmask6=str(address["prefixlen"]), cidr6=str(network))
            entry["method6"] = "static"
            entry["families"].append("inet6")
    ports = sorted(other["ifname"] for other in links if other.get("master") == name)
    if kind == "bridge":
        entry["bridge_ports"] = " ".join(p for p in ports if not p.startswith(("tap", "veth", "fwpr")))
        entry["bridge_stp"] = "on" if info.get("stp_state") else "off"
        entry["bridge_fd"] = str(int(info.get("forward_delay", 0)) // 100)
        if info.get("vlan_filtering"):
            entry["bridge_vlan_aware"] = 1
    elif kind == "bond":
        entry["slaves"] = " ".join(ports)
        entry["bond_mode"] = BOND_MODES.get(str(info.get("mode")), str(info.get("mode", "balance-rr")))
    elif kind == "vlan":
        entry["vlan-id"] = int(info.get("id", 0))
        entry["vlan-raw-device"] = str(link.get("link", ""))
    return entry


def interfaces(kind: str | None = None) -> list[dict[str, Any]]:
    """The interfaces of ``kind`` (``any_bridge``: Linux and OVS bridges), sorted by name."""
    links = _links()
    result = []
    for link in links:
        found = _kind(link)
        if found is None:
            continue
        if kind in ("any_bridge", "any_local_bridge") and found != "bridge":
            continue
        if kind not in (None, "any_bridge", "any_local_bridge", "include_sdn") and found != kind:
            continue
        result.append(_entry(link, found, links))
    return sorted(result, key=lambda entry: entry["iface"])


def interface(name: str) -> dict[str, Any] | None:
    return next((entry for entry in interfaces() if entry["iface"] == name), None)
