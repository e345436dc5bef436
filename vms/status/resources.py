"""``/cluster/resources``: VMs, nodes, storages and pools, from the replicated configuration and
every node's volatile status (never from QEMU).

The configuration part of a VM's entry is built once per replicated version and kept; a request
selects the visible VMs in the database (:mod:`vms.status.visibility`) and adds the live values
the VM's node published.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from authz import resolver
from authz.models import Pool
from authz.permissions import has_privileges
from cluster.models import Node
from portal.api.compression import compress
from portal.api.renderers import render_json
from replicator import client
from replicator.exceptions import ReplicationError
from vms.models import VM, Storage
from vms.status.collector import vm_limits
from vms.status.visibility import Visible, visible

LIVE_FIELDS = ["vms", "storages", "vmstatus_time", "cpu", "maxcpu", "mem", "maxmem", "disk", "maxdisk", "uptime"]
VM_LIVE = ("cpu", "mem", "uptime", "netin", "netout", "diskread", "diskwrite")
DISK_KEY = re.compile(r"^(scsi|virtio|sata|ide)\d+$|^efidisk0$|^tpmstate0$")
UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

ANSWER_MAX_AGE = 2.0  # as Proxmox's status dump cache; the collector's rounds are PVE_STATUS_INTERVAL (2 s) apart
ANSWER_CACHE_SIZE = 64
_cache_lock = threading.Lock()
_cache: tuple[int, dict[int, dict[str, Any]]] | None = None
AnswerKey = tuple[str | None, int, "Rules"]
Answer = tuple[float, bytes, bytes | None]  # built at (monotonic), JSON, gzip of it (None: not yet)
_answers: dict[AnswerKey, Answer] = {}
_building: dict[AnswerKey, threading.Event] = {}
STALE_AFTER = 10 * ANSWER_MAX_AGE  # answers older than this are dropped from the cache
BUILD_WAIT = 30.0  # seconds a caller waits for another's build before it checks again


def disk_size(config: dict[str, Any]) -> int:
    """The sum of the VM's disk sizes (``size=`` of every drive but CD-ROMs), Proxmox's ``maxdisk``."""
    total = 0
    for key, value in config.items():
        text = str(value)
        if not DISK_KEY.match(key) or "media=cdrom" in text:
            continue
        match = re.search(r"(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)(?:,|$)", text)
        if match:
            total += int(float(match.group(1)) * UNITS[match.group(2)])
    return total


def config_entry(vmid: int, node: str, pool: str | None, config: dict[str, Any], lock: str) -> dict[str, Any]:
    """The configuration fields of a VM's entry (typed as clients decode them)."""
    limits = vm_limits(config)
    entry: dict[str, Any] = {
        "id": f"qemu/{vmid}",
        "type": "qemu",
        "vmid": vmid,
        "node": node,
        "name": str(config.get("name", f"VM{vmid}")),
        "status": "unknown",
        "template": int(str(config.get("template", "0")) == "1"),
        "maxcpu": limits["cpus"],
        "cpu": 0.0,
        "maxmem": limits["maxmem"],
        "mem": 0,
        "maxdisk": disk_size(config),
        "disk": 0,
        "uptime": 0,
        "netin": 0,
        "netout": 0,
        "diskread": 0,
        "diskwrite": 0,
    }
    if pool:
        entry["pool"] = pool
    if config.get("tags"):
        entry["tags"] = str(config["tags"])
    if lock:
        entry["lock"] = lock
    return entry


def vm_entries() -> dict[int, dict[str, Any]]:
    """Every VM's configuration entry, rebuilt when the replicated version moves."""
    global _cache
    version = resolver.current_version()
    with _cache_lock:
        if _cache is not None and _cache[0] == version:
            return _cache[1]
    rows = VM.objects.values_list("vmid", "node_id", "pool_id", "config", "lock")
    entries = {vmid: config_entry(vmid, node, pool, config or {}, lock) for vmid, node, pool, config, lock in rows}
    with _cache_lock:
        _cache = (version, entries)
    return entries


def live_board() -> dict[str, dict[str, Any]]:
    """Every node's volatile status (with ``online``), or nothing when the replicator cannot answer."""
    try:
        return dict(client.request({"op": "cluster_status", "fields": LIVE_FIELDS}, timeout=5).get("nodes") or {})
    except ReplicationError:
        return {}


def vm_state(entry: dict[str, Any], board: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The entry with its node's live values: running, stopped, or unknown when the node says nothing."""
    node = board.get(entry["node"], {})
    live = (node.get("vms") or {}).get(str(entry["vmid"])) if node.get("online") else None
    result = dict(entry)
    if live is not None:
        result["status"] = "running"
        for key in VM_LIVE:
            if key in live:
                result[key] = live[key]
        result["cpu"] = float(result["cpu"])
    elif node.get("online") and "vmstatus_time" in node:
        result["status"] = "stopped"
    return result


def vm_resources(rule: Visible, board: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    entries = vm_entries()
    if rule.default and not rule.exceptions:  # sees every VM: no query of 10,000 ids to learn that
        return [vm_state(entry, board) for entry in entries.values()]
    allowed = rule.apply(VM.objects.all(), "vmid").values_list("vmid", flat=True)
    return [vm_state(entries[vmid], board) for vmid in allowed if vmid in entries]


def node_resources(auditable: frozenset[str], board: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every node; its statistics only with Sys.Audit on it (as Proxmox)."""
    result = []
    for node in Node.objects.all():
        live = board.get(node.name, {})
        online = bool(live.get("online"))
        entry: dict[str, Any] = {
            "id": f"node/{node.name}",
            "type": "node",
            "node": node.name,
            "status": "online" if online else ("offline" if live else "unknown"),
            "level": "",
        }
        if live and node.name in auditable:
            entry["cpu"] = float(live.get("cpu", 0.0))
            for key in ("maxcpu", "mem", "maxmem", "disk", "maxdisk", "uptime"):
                entry[key] = int(live.get(key, 0))
        result.append(entry)
    return result


def storage_resources(rule: Visible, board: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per storage and node it is enabled on (Datastore.Audit or .AllocateSpace on it)."""
    nodes = list(Node.objects.values_list("name", flat=True))
    result = []
    for storage in rule.apply(Storage.objects.all(), "storeid").filter(disable=False):
        on = [n.strip() for n in storage.nodes.split(",") if n.strip()] or nodes
        for node in on:
            live = board.get(node, {})
            usage = (live.get("storages") or {}).get(storage.storeid) if live.get("online") else None
            entry: dict[str, Any] = {
                "id": f"storage/{node}/{storage.storeid}",
                "type": "storage",
                "storage": storage.storeid,
                "node": node,
                "status": "available" if usage and usage.get("active") else "unknown",
                "plugintype": storage.type,
                "content": storage.content,
                "shared": int(storage.shared),
                "disk": int(usage["used"]) if usage else 0,
                "maxdisk": int(usage["total"]) if usage else 0,
            }
            if storage.pool_id:
                entry["pool"] = storage.pool_id
            result.append(entry)
    return result


def pool_resources(rule: Visible) -> list[dict[str, Any]]:
    return [
        {"id": f"pool/{poolid}", "type": "pool", "pool": poolid, **({"comment": comment} if comment else {})}
        for poolid, comment in rule.apply(Pool.objects.all(), "poolid").values_list("poolid", "comment")
    ]


@dataclass(frozen=True)
class Rules:
    """What one caller may see of each kind: the key of a cached answer, with the version."""

    vms: Visible
    storages: Visible
    pools: Visible
    auditable_nodes: frozenset[str]


def rules_of(user: Any) -> Rules:
    return Rules(
        vms=visible(user, "/vms", ("VM.Audit",)),
        storages=visible(user, "/storage", ("Datastore.Audit", "Datastore.AllocateSpace"), any_of=True),
        pools=visible(user, "/pool", ("Pool.Audit",)),
        auditable_nodes=frozenset(
            name
            for name in Node.objects.values_list("name", flat=True)
            if has_privileges(user, f"/nodes/{name}", ["Sys.Audit"])
        ),
    )


def resources(user: Any, kind: str | None) -> list[dict[str, Any]]:
    """The answer of ``GET /cluster/resources[?type=kind]``."""
    return _build(rules_of(user), kind)


def _build(rules: Rules, kind: str | None) -> list[dict[str, Any]]:
    board = live_board()
    result: list[dict[str, Any]] = []
    if kind in (None, "vm"):
        result += vm_resources(rules.vms, board)
    if kind in (None, "node"):
        result += node_resources(rules.auditable_nodes, board)
    if kind in (None, "storage"):
        result += storage_resources(rules.storages, board)
    if kind in (None, "pool"):
        result += pool_resources(rules.pools)
    return result


def resources_body(user: Any, kind: str | None, *, gzipped: bool = False) -> tuple[bytes, bytes | None]:
    """The rendered answer and, with ``gzipped``, the same compressed; shared for up to
    ``ANSWER_MAX_AGE`` seconds by callers who see the same (compressed once per shared answer).

    Live values are at most one status interval old anyway (Proxmox caches its status dump for
    2 s); the replicated version is part of the key, so a configuration change (a lock, a new
    VM, a grant) is in the very next answer. One caller at a time builds an answer: while it
    does, the others get the answer it replaces (same key, so the same configuration) or, when
    there is none, wait for it. Without this, 50 clients finding the answer expired all built it
    at once and each waited for all 50 builds.
    """
    key = (kind, resolver.current_version(), rules_of(user))
    cached, builder = _claim(key)
    if builder is not None:
        try:
            cached = (time.monotonic(), render_json({"data": _build(key[2], kind)}), None)
            if gzipped:
                cached = (cached[0], cached[1], compress(cached[1]))
            _store(key, cached)
        finally:
            with _cache_lock:
                del _building[key]
            builder.set()
    assert cached is not None
    if gzipped and cached[2] is None:
        cached = (cached[0], cached[1], compress(cached[1]))
        _store(key, cached)
    return cached[1], cached[2] if gzipped else None


def _claim(key: AnswerKey) -> tuple[Answer | None, threading.Event | None]:
    """A usable answer, or the event this caller sets once it has built one (it is the builder)."""
    while True:
        with _cache_lock:
            cached = _answers.get(key)
            building = _building.get(key)
            age = time.monotonic() - cached[0] if cached is not None else STALE_AFTER
            if age < ANSWER_MAX_AGE or (building is not None and age < STALE_AFTER):
                return cached, None  # fresh, or being rebuilt by another caller meanwhile: a little older
            if building is None:
                event = _building[key] = threading.Event()
                return None, event
        building.wait(BUILD_WAIT)


def _store(key: AnswerKey, answer: Answer) -> None:
    with _cache_lock:
        now = time.monotonic()
        for stale in [k for k, (stamp, _, _) in _answers.items() if now - stamp >= STALE_AFTER and k not in _building]:
            del _answers[stale]
        if len(_answers) < ANSWER_CACHE_SIZE or key in _answers:
            _answers[key] = answer
