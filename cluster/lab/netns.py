"""Network namespaces, a bridge and veth pairs: the lab's wiring. Every command is an argv list."""

from __future__ import annotations

import subprocess


def ip(*args: str, namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip", *(["-n", namespace] if namespace else []), *args]
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def create_bridge(namespace: str) -> None:
    ip("netns", "add", namespace)
    ip("link", "set", "lo", "up", namespace=namespace)
    ip("link", "add", "br0", "type", "bridge", namespace=namespace)
    ip("link", "set", "br0", "up", namespace=namespace)


def attach_node(bridge_ns: str, node_ns: str, port: str, address: str) -> None:
    """A veth pair: ``eth0`` with ``address`` in the node's namespace, ``port`` on the bridge; and
    the node's ``vmbr0``."""
    ip("netns", "add", node_ns)
    ip("link", "set", "lo", "up", namespace=node_ns)
    peer = f"{port}n"
    ip("link", "add", port, "type", "veth", "peer", "name", peer)
    ip("link", "set", port, "netns", bridge_ns)
    ip("link", "set", peer, "netns", node_ns)
    ip("link", "set", peer, "name", "eth0", namespace=node_ns)
    ip("addr", "add", address, "dev", "eth0", namespace=node_ns)
    ip("link", "set", "eth0", "up", namespace=node_ns)
    ip("link", "set", port, "master", "br0", namespace=bridge_ns)
    ip("link", "set", port, "up", namespace=bridge_ns)
    # The node's guest bridge, as on a Proxmox host (its VMs' taps join it; no uplink).
    ip("link", "add", "vmbr0", "type", "bridge", namespace=node_ns)
    ip("link", "set", "vmbr0", "up", namespace=node_ns)


def set_port(bridge_ns: str, port: str, *, up: bool) -> None:
    """Cut (or restore) one node's link to the bridge: a partition of that node."""
    ip("link", "set", port, "up" if up else "down", namespace=bridge_ns)


def delete(namespace: str) -> None:
    ip("netns", "del", namespace, check=False)


def attach_host(bridge_ns: str, port: str, address: str) -> None:
    """A veth pair from the host namespace into the bridge: ``port`` on the host with ``address``.

    A leftover of an earlier lab with the same name is removed first.
    """
    peer = f"{port}b"
    delete_link(port)
    ip("link", "add", port, "type", "veth", "peer", "name", peer)
    ip("link", "set", peer, "netns", bridge_ns)
    ip("link", "set", peer, "master", "br0", namespace=bridge_ns)
    ip("link", "set", peer, "up", namespace=bridge_ns)
    ip("addr", "add", address, "dev", port)
    ip("link", "set", port, "up")


def delete_link(name: str) -> None:
    """Remove a host link (and so its veth peer) if it exists."""
    ip("link", "del", name, check=False)


def links() -> set[str]:
    """Names of the host namespace's links."""
    listing = ip("-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in listing.splitlines() if line.strip()}


def pids(namespace: str) -> list[int]:
    """Processes running in ``namespace`` (none if it does not exist)."""
    result = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False)
    return [int(word) for word in result.stdout.split() if word.isdigit()]


def links_with_address_in(prefix: str) -> list[str]:
    """Host links holding an IPv4 address inside ``prefix`` (e.g. another lab's host port)."""
    listing = ip("-o", "-4", "addr", "show", "to", prefix).stdout
    return sorted({line.split()[1] for line in listing.splitlines() if line.strip()})
