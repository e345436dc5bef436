"""corosync.conf: rendered from the replicated ``CorosyncConfig`` and ``Node`` rows, copied to the host.

Proxmox keeps corosync.conf in pmxcfs, bumps ``totem.config_version`` on every write, and every
node copies the file to ``/etc/corosync/corosync.conf`` when that version rises, never down; corosync
re-reads it on ``corosync-cfgtool -R`` (PVE-INTERNALS §5). Here the rows are the source of truth:
every change that alters the rendered text goes through ``update_corosync`` (or the shorthands
below it), which bumps ``config_version`` in the same change set, so all nodes render the same
file at the same version. The replicator renders it into the tree (``cluster.renderers``) and
calls ``sync_host`` to copy it to ``PVE_COROSYNC_CONF``.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import re
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from cluster.models import CorosyncConfig, Node
from replicator.files import atomic_write

log = logging.getLogger(__name__)

CONFIG_ID = "corosync"
MAX_LINKS = 8
QUORUM = {"provider": "corosync_votequorum"}
# ``create_conf`` of Proxmox's Corosync.pm for a new cluster (PVE-INTERNALS §5.1).
DEFAULT_TOTEM: dict[str, Any] = {
    "ip_version": "ipv4-6",
    "link_mode": "passive",
    "secauth": "on",
    "token_coefficient": 125,
    "version": 2,
}
DEFAULT_SECTIONS: dict[str, Any] = {"logging": {"debug": "off", "to_syslog": "yes"}}
# Rendered from the rows or fixed: never taken from the free-form option dicts.
RESERVED_TOTEM = frozenset({"cluster_name", "config_version", "interface"})
RESERVED_SECTIONS = frozenset({"nodelist", "quorum", "totem"})

# quorum.device keys ``pvecm qdevice`` writes or corosync-qdevice(8) documents for model net.
DEVICE_KEYS = frozenset({"model", "votes", "timeout", "sync_timeout", "net"})
DEVICE_NET_KEYS = frozenset(
    {
        "algorithm",
        "connect_timeout",
        "force_ip_version",
        "host",
        "keep_active_partition_tie_breaker",
        "port",
        "tie_breaker",
        "tls",
    }
)
DEVICE_NET_CHOICES = {
    "algorithm": ("ffsplit", "lms"),
    "tls": ("on", "off", "required"),
    "force_ip_version": ("0", "4", "6"),
    "keep_active_partition_tie_breaker": ("on", "off"),
}

_CLUSTER_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,13}[A-Za-z0-9])?$")
_NODE_NAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_BAD_VALUE_RE = re.compile(r"[\x00-\x1f{}#]")
_CONFIG_VERSION_RE = re.compile(r"^\s*config_version\s*:\s*(\d+)\s*$", re.MULTILINE)


# --- Rendering -------------------------------------------------------------------------------


def serialize(tree: dict[str, Any]) -> str:
    """Proxmox's ``write_conf``: keys sorted at every level, 2-space indent, a blank line after top-level sections.

    A dict value is a section, a list of dicts an array section (``node``, ``interface``) kept
    in the given order, anything else a ``key: value`` line.
    """

    def dump(section: dict[str, Any], prefix: str) -> str:
        out = ""
        for key in sorted(section):
            value = section[key]
            if isinstance(value, dict):
                out += f"{prefix}{key} {{\n{dump(value, prefix + '  ')}{prefix}}}\n"
                if not prefix:
                    out += "\n"
            elif isinstance(value, list):
                for child in value:
                    out += f"{prefix}{key} {{\n{dump(child, prefix + '  ')}{prefix}}}\n"
            else:
                out += f"{prefix}{key}: {value}\n"
        return out

    return dump(tree, "")


def node_links(node: Node) -> dict[int, str]:
    """A node's link addresses by link number; link 0 is its address unless ``links`` says otherwise."""
    links: dict[int, str] = {0: node.address} if node.address else {}
    for number, address in (node.links or {}).items():
        links[int(number)] = str(address)
    return {number: links[number] for number in sorted(links) if links[number]}


def render(config: CorosyncConfig, nodes: Iterable[Node], *, config_version: int | None = None) -> str:
    """The corosync.conf of ``config`` and ``nodes`` (nodes sorted by name, interfaces by link number)."""
    node_sections = []
    for node in sorted(nodes, key=lambda n: n.name):
        entry: dict[str, Any] = {"name": node.name, "nodeid": node.nodeid, "quorum_votes": node.quorum_votes}
        for number, address in node_links(node).items():
            entry[f"ring{number}_addr"] = address
        node_sections.append(entry)
    interfaces = config.interfaces or {"0": {}}
    totem = {
        **{k: v for k, v in (config.totem or {}).items() if k not in RESERVED_TOTEM},
        "cluster_name": config.cluster_name,
        "config_version": config.config_version if config_version is None else config_version,
        "interface": [{**interfaces[n], "linknumber": int(n)} for n in sorted(interfaces, key=int)],
    }
    sections = {k: v for k, v in (config.sections or {}).items() if k not in RESERVED_SECTIONS}
    quorum = {**QUORUM, **({"device": copy.deepcopy(config.quorum_device)} if config.quorum_device else {})}
    return serialize({**sections, "nodelist": {"node": node_sections}, "quorum": quorum, "totem": totem})


def load() -> tuple[CorosyncConfig | None, list[Node]]:
    """The corosync row (``None`` when the node is not in a cluster) and all nodes, from the cluster database."""
    config = CorosyncConfig.objects.using("cluster").filter(id=CONFIG_ID).first()
    nodes = list(Node.objects.using("cluster").order_by("name"))
    return (config if config is not None and config.cluster_name else None), nodes


def cluster_name() -> str | None:
    """The cluster this node's state says it belongs to, or None (the replicator's transport choice)."""
    name = CorosyncConfig.objects.using("cluster").filter(id=CONFIG_ID).values_list("cluster_name", flat=True).first()
    return name or None


def render_current() -> tuple[str, set[str]] | None:
    """The current corosync.conf and the names in its nodelist, or ``None`` outside a cluster.

    Validated first (ValueError): rows written around ``update_corosync`` never reach the file.
    """
    config, nodes = load()
    if config is None:
        return None
    validate(config, nodes)
    return render(config, nodes), {node.name for node in nodes}


def parse_config_version(text: str) -> int:
    """``totem.config_version`` of a corosync.conf text (0 when absent, as corosync reads it)."""
    uncommented = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    match = _CONFIG_VERSION_RE.search(uncommented)
    return int(match.group(1)) if match else 0


# --- Validation ------------------------------------------------------------------------------


def _check_options(where: str, options: Any, *, nested: bool = False) -> None:
    if not isinstance(options, dict):
        raise ValueError(f"{where}: expected a mapping of options")
    for key, value in options.items():
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ValueError(f"{where}: invalid key {key!r}")
        if nested and isinstance(value, dict):
            _check_options(f"{where}.{key}", value)
        elif isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"{where}.{key}: a value is a string or an integer")
        elif _BAD_VALUE_RE.search(str(value)) or str(value) != str(value).strip() or str(value) == "":
            raise ValueError(f"{where}.{key}: invalid value {value!r}")


def check_address(address: Any, where: str) -> str:
    """An IP address, normalised; anything else (a host name, a second line, a space) is refused."""
    try:
        return str(ipaddress.ip_address(address if isinstance(address, str) else ""))
    except ValueError:
        raise ValueError(f"{where}: invalid address {address!r} (an IP address is needed)") from None


def check_node(node: Node) -> None:
    """A node's own settings, before they reach corosync.conf or known_hosts: nothing there can break a line.

    The name is a DNS label, the address and every link an IP address on a link number 0..7,
    votes a number of 0 or more. Normalises the addresses in place.
    """
    if not isinstance(node.name, str) or not _NODE_NAME_RE.match(node.name):
        raise ValueError(f"invalid node name {node.name!r}")
    node.address = check_address(node.address, f"node {node.name}")
    if not isinstance(node.links, dict):
        raise ValueError(f"node {node.name}: links must map link numbers to IP addresses")
    links = {}
    for number, address in node.links.items():
        if not str(number).isdigit() or not 0 <= int(number) < MAX_LINKS:
            raise ValueError(f"node {node.name}: link number {number!r} is not 0..{MAX_LINKS - 1}")
        links[str(int(number))] = check_address(address, f"node {node.name} link {number}")
    node.links = links
    if isinstance(node.votes, bool) or not isinstance(node.votes, int) or node.votes < 0:
        raise ValueError(f"node {node.name}: votes must be a number of 0 or more")


def validate(config: CorosyncConfig, nodes: Iterable[Node]) -> None:
    """Refuse what corosync would reject or Proxmox never writes (two_node and friends included)."""
    if not _CLUSTER_NAME_RE.match(config.cluster_name):
        raise ValueError(f"invalid cluster name {config.cluster_name!r} (1-15 letters, digits, '-')")
    _check_options("totem", config.totem)
    if RESERVED_TOTEM & set(config.totem):
        raise ValueError(f"totem: {', '.join(sorted(RESERVED_TOTEM & set(config.totem)))} are set by the cluster")
    if not isinstance(config.sections, dict) or not all(isinstance(v, dict) for v in config.sections.values()):
        raise ValueError("sections: expected a mapping of section name to options")
    for name, options in config.sections.items():
        if name in RESERVED_SECTIONS or not _KEY_RE.match(name):
            raise ValueError(f"section {name!r} cannot be set")
        _check_options(name, options, nested=True)
    if config.quorum_device:
        validate_quorum_device(config.quorum_device)
    interfaces = config.interfaces or {"0": {}}
    if not isinstance(interfaces, dict) or not interfaces:
        raise ValueError("interfaces: expected a mapping of link number to options")
    links = set()
    for number, options in interfaces.items():
        if not str(number).isdigit() or not 0 <= int(number) < MAX_LINKS:
            raise ValueError(f"interfaces: link number {number!r} is not 0..{MAX_LINKS - 1}")
        _check_options(f"interface {number}", options)
        links.add(int(number))
    seen: dict[str, str] = {}
    nodeids: set[int] = set()
    for node in nodes:
        check_node(node)
        node_link_set = node_links(node)
        if set(node_link_set) != links:
            raise ValueError(
                f"node {node.name}: links {sorted(node_link_set)} do not match the cluster's {sorted(links)}"
            )
        if node.nodeid in nodeids or not node.nodeid:
            raise ValueError(f"node {node.name}: nodeid {node.nodeid} is not unique and positive")
        nodeids.add(node.nodeid)
        for address in node_link_set.values():
            if address in seen:
                raise ValueError(f"node {node.name}: address {address} is already used by {seen[address]}")
            seen[address] = node.name


def validate_quorum_device(device: Any) -> None:
    """A QDevice section corosync-qdevice accepts: model net with a host; ffsplit only with one vote."""
    _check_options("quorum.device", device, nested=True)
    if set(device) - DEVICE_KEYS:
        raise ValueError(f"quorum.device: unknown keys {', '.join(sorted(set(device) - DEVICE_KEYS))}")
    if device.get("model") != "net":
        raise ValueError("quorum.device.model: only 'net' is supported")
    for key in ("votes", "timeout", "sync_timeout"):
        if key in device and (not str(device[key]).isdigit() or int(device[key]) < 1):
            raise ValueError(f"quorum.device.{key}: a positive integer is expected")
    net = device.get("net")
    if not isinstance(net, dict) or not net.get("host"):
        raise ValueError("quorum.device.net.host: the qnetd host is required")
    if set(net) - DEVICE_NET_KEYS:
        raise ValueError(f"quorum.device.net: unknown keys {', '.join(sorted(set(net) - DEVICE_NET_KEYS))}")
    if " " in str(net["host"]):
        raise ValueError(f"quorum.device.net.host: invalid host {net['host']!r}")
    for key, choices in DEVICE_NET_CHOICES.items():
        if key in net and str(net[key]) not in choices:
            raise ValueError(f"quorum.device.net.{key}: one of {', '.join(choices)}")
    for key in ("port", "connect_timeout"):
        if key in net and (not str(net[key]).isdigit() or int(net[key]) < 1):
            raise ValueError(f"quorum.device.net.{key}: a positive integer is expected")
    if net.get("algorithm", "ffsplit") == "ffsplit" and str(device.get("votes", "")) != "1":
        raise ValueError("quorum.device.votes: the ffsplit algorithm needs exactly 1 vote")


# --- Changes (config_version bumped in the same change set) ----------------------------------


def update_corosync(
    config: CorosyncConfig | None = None,
    *,
    save: Iterable[Node] = (),
    delete: Iterable[str] = (),
) -> int:
    """Write corosync and node changes as one change set, bumping config_version iff corosync.conf changes.

    ``config`` is the changed corosync row (loaded from the database, or new); ``save`` nodes
    added or changed; ``delete`` names of nodes removed. The bump is an optimistic write of the
    corosync row, so two concurrent changes cannot both take the same version: one of them
    fails with ``ConflictError``, as Proxmox serialises writers with its corosync.conf lock.
    Returns the config_version in force afterwards (0 outside a cluster).
    """
    save, delete = list(save), set(delete)
    row = CorosyncConfig.objects.using("cluster").filter(id=CONFIG_ID).first()
    before_nodes = {node.name: node for node in Node.objects.using("cluster").all()}
    after_nodes = {name: node for name, node in before_nodes.items() if name not in delete}
    after_nodes.update({node.name: node for node in save})
    after = config if config is not None else row
    active_after = after is not None and bool(after.cluster_name)
    changed = False
    if after is not None and active_after:
        validate(after, after_nodes.values())
        body = render(after, after_nodes.values(), config_version=0)
        changed = row is None or not row.cluster_name or render(row, before_nodes.values(), config_version=0) != body
    with transaction.atomic(using="cluster"):
        for node in save:
            node.save()
        if delete:
            Node.objects.using("cluster").filter(name__in=sorted(delete)).delete()
        if after is not None and changed:
            after.config_version = max(row.config_version if row is not None else 0, after.config_version) + 1
            after.save()
        elif config is not None:
            config.save()
    return after.config_version if after is not None and active_after else 0


def create_cluster(
    cluster_name: str,
    *,
    totem: dict[str, Any] | None = None,
    interfaces: dict[str, dict[str, Any]] | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
    nodes: Iterable[Node] = (),
) -> int:
    """Give this cluster its corosync identity (``pvecm create``): config_version becomes 1, or rises past an old one.

    ``nodes`` are saved in the same change set (the first member's id, votes and address).
    """
    config = CorosyncConfig.objects.using("cluster").filter(id=CONFIG_ID).first() or CorosyncConfig(id=CONFIG_ID)
    if config.cluster_name:
        raise ValueError(f"this node is already in cluster {config.cluster_name!r}")
    config.cluster_name = cluster_name
    config.totem = copy.deepcopy(DEFAULT_TOTEM if totem is None else totem)
    config.interfaces = copy.deepcopy({"0": {}} if interfaces is None else interfaces)
    config.sections = copy.deepcopy(DEFAULT_SECTIONS if sections is None else sections)
    return update_corosync(config, save=nodes)


def update_options(
    *,
    totem: dict[str, Any] | None = None,
    interfaces: dict[str, dict[str, Any]] | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
) -> int:
    """Merge totem options (``None`` removes a key), replace interfaces or sections; bumps if anything renders differently."""
    config = CorosyncConfig.objects.using("cluster").get(id=CONFIG_ID)
    if totem is not None:
        merged = dict(config.totem)
        for key, value in totem.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        config.totem = merged
    if interfaces is not None:
        config.interfaces = interfaces
    if sections is not None:
        config.sections = sections
    return update_corosync(config)


def save_nodes(*nodes: Node) -> int:
    """Add or change nodes (name, nodeid, votes, addresses); bumps when the nodelist changes."""
    return update_corosync(save=nodes)


def delete_nodes(*names: str) -> int:
    """Remove nodes from the cluster; bumps config_version."""
    return update_corosync(delete=names)


# --- The host copy ---------------------------------------------------------------------------


def reload_corosync() -> bool:
    """``corosync-cfgtool -R``: every corosync of the cluster re-reads its corosync.conf; failures are logged."""
    try:
        result = subprocess.run(["corosync-cfgtool", "-R"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("corosync-cfgtool -R failed: %s", exc)
        return False
    if result.returncode != 0:
        log.warning("corosync-cfgtool -R failed (%d): %s", result.returncode, (result.stderr or result.stdout).strip())
        return False
    return True


def install(text: str, target: Path, *, reload: Callable[[], object] | None = None) -> bool:
    """Copy ``text`` to ``target`` if its config_version is higher (pmxcfs's ``dcdb_sync_corosync_conf``).

    A newer or equal version on the host is kept (never a downgrade). ``reload`` runs after a
    replaced file, not after the first one: a corosync that was running read the old file.
    Returns whether the file was written.
    """
    try:
        old = target.read_text(errors="replace")
    except FileNotFoundError:
        old = None
    if old == text:
        return False
    version = parse_config_version(text)
    if old is not None:
        old_version = parse_config_version(old)
        if version < old_version:
            log.warning(
                "local corosync.conf is newer (version %d > %d), not replaced: %s", old_version, version, target
            )
            return False
        if version == old_version:
            log.warning("corosync.conf version %d differs from %s at the same version, not replaced", version, target)
            return False
    atomic_write(target, text.encode(), mode=0o644)
    log.info("wrote new corosync config '%s' (version = %d)", target, version)
    if old is not None and reload is not None:
        reload()
    return True


def sync_host(text: str, members: set[str]) -> bool:
    """After a render: copy to ``PVE_COROSYNC_CONF`` if this node is in the nodelist; never raises.

    corosync is reloaded only when the replicator runs over corosync (a standalone node has no
    corosync to reload). Every node that copies reloads, so no node waits for the originator's.
    """
    if settings.PVE_NODE_NAME not in members:
        return False
    from replicator.membership import active_kind

    reload = reload_corosync if active_kind() == "corosync" else None
    try:
        return install(text, Path(settings.PVE_COROSYNC_CONF), reload=reload)
    except Exception:
        log.exception("cannot copy corosync.conf to %s", settings.PVE_COROSYNC_CONF)
        return False
