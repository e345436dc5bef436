"""The names and addresses this node answers to (Django's ``ALLOWED_HOSTS``), found at start.

A request whose ``Host`` is not one of them is refused (400), so a page on another site cannot
reach the node under a name it controls (DNS rebinding), and the websocket Origin check
(``portal.origin``) has a list to check against. The defaults cover access by the node's name
and addresses, the lab (each node's own address, as the host reaches it) and requests forwarded
from another node (``Host`` is this node's address from the cluster's node table, one of its
interface addresses); ``PVE_ALLOWED_HOSTS`` adds names (e.g. a DNS name behind a proxy).

No Django and no DNS here: it runs while the settings load, and a name server that does not
answer must not stall every process start.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable
from pathlib import Path

LOOPBACK = ("localhost", "127.0.0.1", "[::1]")


def _ipv4_local(fib_trie: str) -> list[str]:
    """The addresses ``/proc/net/fib_trie`` marks as this host's (``/32 host LOCAL``)."""
    found: list[str] = []
    last = ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("|--"):
            last = text[3:].strip()
        elif text.startswith("/32 host LOCAL") and last and last not in found:
            found.append(last)
    return found


def _ipv6_local(if_inet6: str) -> list[str]:
    """The global and unique-local addresses of ``/proc/net/if_inet6`` (link-local ones need a zone)."""
    found: list[str] = []
    for line in if_inet6.splitlines():
        fields = line.split()
        if not fields or len(fields[0]) != 32:
            continue
        try:
            address = ipaddress.IPv6Address(int(fields[0], 16))
        except ValueError:
            continue
        if not address.is_link_local:
            found.append(str(address))
    return found


def interface_addresses(proc_net: Path = Path("/proc/net")) -> list[str]:
    """This host's addresses (of its network namespace), IPv6 in brackets as a Host header has them."""
    addresses: list[str] = []
    with contextlib.suppress(OSError):
        addresses += _ipv4_local((proc_net / "fib_trie").read_text())
    with contextlib.suppress(OSError):
        addresses += [f"[{address}]" for address in _ipv6_local((proc_net / "if_inet6").read_text())]
    return addresses


def hosts_file_names(hostname: str, hosts: Path = Path("/etc/hosts")) -> list[str]:
    """Every name on the ``/etc/hosts`` lines that name this host (its FQDN, as Proxmox sets it up)."""
    short = hostname.split(".")[0].lower()
    names: list[str] = []
    try:
        lines = hosts.read_text(errors="replace").splitlines()
    except OSError:
        return names
    for line in lines:
        fields = line.split("#", 1)[0].split()
        aliases = [name.lower() for name in fields[1:]]
        if any(name == short or name.split(".")[0] == short for name in aliases):
            names += aliases
    return names


def _bracketed(value: str) -> str:
    """An IPv6 address as it appears in a Host header; anything else lower-cased."""
    try:
        if isinstance(ipaddress.ip_address(value), ipaddress.IPv6Address):
            return f"[{value}]"
    except ValueError:
        pass
    return value.lower()


def allowed_hosts(node: str, hostname: str, address: str | None, extra: Iterable[str]) -> list[str]:
    """Loopback, the node's names and addresses, then the operator's ``extra`` (no duplicates)."""
    candidates = [
        *LOOPBACK,
        node,
        hostname,
        *hosts_file_names(hostname),
        *([address] if address else []),
        *interface_addresses(),
        *extra,
    ]
    result: list[str] = []
    for candidate in candidates:
        value = _bracketed(candidate.strip())
        if value and value not in result:
            result.append(value)
    return result
