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
    """A veth pair: ``eth0`` with ``address`` in the node's namespace, ``port`` on the bridge."""
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


def set_port(bridge_ns: str, port: str, *, up: bool) -> None:
    """Cut (or restore) one node's link to the bridge: a partition of that node."""
    ip("link", "set", port, "up" if up else "down", namespace=bridge_ns)


def delete(namespace: str) -> None:
    ip("netns", "del", namespace, check=False)
