"""The cluster side of membership changes: join information, adding a node, deleting a node.

Run on a member (``pvecm addnode`` over SSH, ``POST /cluster/config/nodes/{node}``, ``pvecm
delnode``). Every change is one replicated change set, so it needs quorum like any write, and
corosync.conf's ``config_version`` rises with it (``cluster.corosync.conf``).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from authz.models import KeyMaterial
from cluster.corosync import conf as corosync_conf
from cluster.keys import ssh_keys
from cluster.membership import guests
from cluster.models import ClusterLogEntry, Node
from replicator.files import atomic_write

JOIN_API_VERSION = 1


class MembershipError(Exception):
    """A refused membership change (nothing was changed)."""


def _clustered() -> corosync_conf.CorosyncConfig:
    config, _nodes = corosync_conf.load()
    if config is None:
        raise MembershipError("this node is not part of a cluster (create one with 'pvecm create NAME')")
    return config


def join_info() -> dict[str, Any]:
    """What a joining node checks before asking to be added (``GET /cluster/config/join``)."""
    config = _clustered()
    local = Node.objects.using("cluster").filter(name=settings.PVE_NODE_NAME).first()
    return {
        "apiversion": JOIN_API_VERSION,
        "cluster_name": config.cluster_name,
        "config_version": config.config_version,
        "preferred_node": settings.PVE_NODE_NAME,
        "fingerprint": local.ssl_fingerprint if local else "",
        "nodelist": [
            {
                "name": n.name,
                "nodeid": n.nodeid,
                "quorum_votes": n.quorum_votes,
                "ring0_addr": n.address,
                "pve_fp": n.ssl_fingerprint,
            }
            for n in Node.objects.using("cluster").order_by("nodeid")
        ],
        "totem": {"cluster_name": config.cluster_name, "config_version": config.config_version, **config.totem},
    }


def _check_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise MembershipError(f"invalid address {address!r} (an IP address is needed for the corosync link)") from None


def check_node_change(node: Node) -> None:
    """What ``change_node`` refuses, without writing: invalid settings, a changed id, a clash with another node."""
    before = Node.objects.using("cluster").filter(name=node.name).first()
    if before is None:
        raise MembershipError(f"no node {node.name} in the cluster")
    if node.nodeid != before.nodeid:
        raise MembershipError(f"the node id of {node.name} cannot be changed (remove and add the node instead)")
    try:
        corosync_conf.check_node(node)
        config, nodes = corosync_conf.load()
        if config is not None:
            corosync_conf.validate(config, [node if other.name == node.name else other for other in nodes])
    except ValueError as exc:
        raise MembershipError(str(exc)) from None


def change_node(node: Node, *, actor: str) -> int:
    """Change a node's address, votes or links: validated as ``pvecm``'s changes are, config_version bumped.

    The cluster log entry naming ``actor`` is part of the same change set. ``node.version`` is
    the version the caller read (a newer change by someone else is a conflict). Returns the
    config_version in force (0 outside a cluster).
    """
    check_node_change(node)
    before = Node.objects.using("cluster").get(name=node.name)
    changes = [
        f"{field} {getattr(before, field)!r} -> {getattr(node, field)!r}"
        for field in ("address", "votes", "links")
        if getattr(before, field) != getattr(node, field)
    ]
    with transaction.atomic(using="cluster"):
        ClusterLogEntry.write(f"changing node {node.name}: {', '.join(changes) or 'nothing'}", user=actor, tag="pvecm")
        try:
            return corosync_conf.save_nodes(node)
        except ValueError as exc:
            raise MembershipError(str(exc)) from None


def lowest_free_nodeid(taken: set[int]) -> int:
    nodeid = 1
    while nodeid in taken:
        nodeid += 1
    return nodeid


def conflicting_vmids(vmids: list[int]) -> list[int]:
    return guests.provider().existing(vmids)


def add_node(
    name: str,
    address: str,
    *,
    nodeid: int | None = None,
    votes: int = 1,
    force: bool = False,
    vmids: list[int] | None = None,
    user: str = "root@pam",
) -> dict[str, Any]:
    """Add ``name`` to the nodelist; returns the corosync authkey and the new corosync.conf for the joiner.

    The node is added as joining: corosync counts none of its votes (quorum_votes 0, expected
    votes unchanged) until it has joined, quorate and in sync, and raises them itself in a new
    config_version (``cluster.membership.bootstrap``). A joiner that dies half way costs the cluster no
    quorum. A node of that name that is already listed with the same address and votes is
    taken as a retried join and keeps its id (an interrupted join can simply be run again).
    """
    _clustered()
    address = _check_address(address)
    if votes < 0:
        raise MembershipError("votes must be 0 or more")
    if not settings.PVE_COROSYNC_AUTHKEY.exists():
        raise MembershipError(f"corosync authkey {settings.PVE_COROSYNC_AUTHKEY} is missing on this node")
    nodes = {node.name: node for node in Node.objects.using("cluster").all()}
    conflicts = conflicting_vmids(list(vmids or []))
    if conflicts:
        raise MembershipError(
            "the joining node holds VMs whose IDs exist in the cluster: "
            + ", ".join(str(v) for v in conflicts)
            + " (renumber or remove them first)"
        )
    for other in nodes.values():
        if other.name != name and address in corosync_conf.node_links(other).values():
            raise MembershipError(f"address {address} is already used by node {other.name}")
    existing = nodes.get(name)
    warnings: list[str] = []
    if existing is not None:
        retry = existing.address == address and existing.votes == votes and nodeid in (None, existing.nodeid)
        if not (retry or force):
            raise MembershipError(f"node {name} already exists in the cluster")
        node = existing
        node.address, node.votes = address, votes
        warnings.append(f"node {name} was already listed; its entry is reused")
    else:
        taken = {n.nodeid for n in nodes.values()}
        if nodeid is not None and nodeid in taken:
            raise MembershipError(f"nodeid {nodeid} is already used")
        node = Node(name=name, nodeid=nodeid or lowest_free_nodeid(taken), address=address, votes=votes, joining=True)
    with transaction.atomic(using="cluster"):
        ClusterLogEntry.write(f"adding node {name} to cluster", user=user, tag="pvecm")
        corosync_conf.save_nodes(node)
    rendered = corosync_conf.render_current()
    assert rendered is not None
    _reload_local(rendered)
    return {
        "corosync_authkey": base64.b64encode(settings.PVE_COROSYNC_AUTHKEY.read_bytes()).decode(),
        "corosync_conf": rendered[0],
        "nodeid": node.nodeid,
        "warnings": warnings,
    }


def _reload_local(rendered: tuple[str, set[str]]) -> None:
    """Install the new corosync.conf here and reload corosync now, before answering the joiner.

    The mirror would do the same once it renders the change, but it may be busy (a bulk write
    before the join); a joiner whose peer does not know it yet has its packets dropped until the
    reload, which can cost corosync a consensus timeout. The mirror then finds the file current.
    """
    corosync_conf.sync_host(*rendered)


def find_node(name_or_address: str) -> Node:
    for node in Node.objects.using("cluster").all():
        if name_or_address == node.name or name_or_address in corosync_conf.node_links(node).values():
            return node
    raise MembershipError(f"Node/IP: {name_or_address} is not a known host of the cluster.")


def delete_node(name_or_address: str, *, force: bool = False, user: str = "root@pam") -> list[str]:
    """Remove a node: nodelist, SSH keys, known-hosts entry and certificate go in one change; returns notes."""
    _clustered()
    node = find_node(name_or_address)
    if node.name == settings.PVE_NODE_NAME:
        raise MembershipError("Cannot delete myself from cluster!")
    vms = guests.provider().on_node(node.name)
    notes: list[str] = []
    if vms and not force:
        raise MembershipError(
            f"node {node.name} still owns VMs {', '.join(str(v.vmid) for v in vms)}; "
            "migrate or remove them first (or use --force to drop their configs)"
        )
    if vms:
        notes.append(
            f"configs of VMs {', '.join(str(v.vmid) for v in vms)} saved to {_save_vm_configs(node.name, vms)}"
        )
    key_rows = ssh_keys.forget_node_rows(node.name)
    with transaction.atomic(using="cluster"):
        ClusterLogEntry.write(f"deleting node {node.name} from cluster", user=user, tag="pvecm")
        for vm in vms:
            vm.delete()
        for row in KeyMaterial.objects.using("cluster").filter(path__in=key_rows):
            row.delete()
        corosync_conf.delete_nodes(node.name)
    if not kill_node(node.nodeid):
        notes.append(f"corosync-cfgtool -k {node.nodeid} failed (the node is probably down already)")
    return notes


def _save_vm_configs(node: str, vms: Sequence[guests.Guest]) -> Path:
    directory = Path(settings.PVE_DATA_DIR) / "backup"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    path = directory / f"delnode-{node}-{stamp}.json"
    configs = {str(vm.vmid): vm.full_config() for vm in vms}
    atomic_write(path, json.dumps(configs, indent=1, sort_keys=True).encode(), mode=0o600)
    return path


def kill_node(nodeid: int) -> bool:
    """``corosync-cfgtool -k``: tell the removed node's corosync to shut down (fails if it is already gone)."""
    try:
        result = subprocess.run(["corosync-cfgtool", "-k", str(nodeid)], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def update_certs(*, force: bool = False, user: str = "root@pam") -> list[str]:
    """``pvecm updatecerts``: this node's certificate (new with ``force`` or when missing) and SSH keys republished."""
    from cluster.membership import bootstrap

    node_name = settings.PVE_NODE_NAME
    lines: list[str] = []
    present = dict(KeyMaterial.objects.using("cluster").values_list("path", "content"))
    rows: list[Any] = list(ssh_keys.publish_node_keys(node_name))
    node = Node.objects.using("cluster").get(name=node_name)
    if force or bootstrap.node_cert_path(node_name) not in present:
        address = node.address or bootstrap.local_address()
        certificate, node.ssl_fingerprint = bootstrap.node_certificate(
            node_name, address, present, datetime.datetime.now(datetime.UTC)
        )
        rows += [*certificate, node]
        lines.append(f"new certificate for {node_name}, fingerprint {node.ssl_fingerprint}")
    if rows:
        with transaction.atomic(using="cluster"):
            ClusterLogEntry.write(f"updating certificate and SSH keys of node {node_name}", user=user, tag="pvecm")
            for row in rows:
                row.save()
    lines.append(f"SSH keys of {node_name} published" if rows else "nothing to update")
    return lines
