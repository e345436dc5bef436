"""Cluster services: the entry points that change cluster state.

The edges (API views, admin, task operations, management commands) and the other apps change
the cluster through these functions; each delegates to the sub-package owning the concern
(``membership``, ``identity``) or writes the rows itself, audited in the cluster
log within the same change set. Nothing here only reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import transaction

from cluster.exceptions import InvalidOptions
from cluster.identity import restore as identity_restore
from cluster.membership import join, nodelist
from cluster.models import ClusterLogEntry, ClusterSettings, Node

# --- The cluster log and datacenter.cfg ----------------------------------------------------------


def log_cluster_message(msg: str, *, user: str = "", tag: str = "pve-django", pri: int = 6) -> ClusterLogEntry:
    """Append an entry to the replicated cluster log (time from this writer's clock)."""
    return ClusterLogEntry.write(msg, user=user, tag=tag, pri=pri)


def update_datacenter_options(row: ClusterSettings, *, actor: str) -> ClusterSettings:
    """Save datacenter.cfg options (Proxmox's ``PUT /cluster/options``), audited in the same change set.

    ``row.version`` is the version the caller read: a newer change by someone else is a conflict.
    """
    if not isinstance(row.options, dict):
        raise InvalidOptions("options must map option names to values")
    for key, value in row.options.items():
        ClusterSettings.check_option(key, value)
    with transaction.atomic(using="cluster"):
        log_cluster_message(f"datacenter options set: {', '.join(sorted(row.options)) or 'none'}", user=actor)
        row.save()
    return row


# --- Membership ----------------------------------------------------------------------------------


def create_cluster(
    name: str, *, nodeid: int | None = None, votes: int = 1, progress: join.Progress = print, user: str = "root@pam"
) -> None:
    """``pvecm create NAME``: this standalone node becomes the first member of cluster ``name``."""
    join.create(name, nodeid=nodeid, votes=votes, progress=progress, user=user)


def join_cluster_over_api(
    host: str,
    *,
    password: str,
    fingerprint: str,
    nodeid: int | None = None,
    votes: int = 1,
    force: bool = False,
    progress: join.Progress = print,
) -> None:
    """``POST /cluster/config/join``: this node joins the cluster of ``host`` over pinned TLS."""
    from cluster.membership import join_remote  # paramiko is loaded only by the processes that join

    join_remote.join_over_api(
        host, password=password, fingerprint=fingerprint, nodeid=nodeid, votes=votes, force=force, progress=progress
    )


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
    """``pvecm addnode``: the cluster side of a join; the corosync authkey and corosync.conf for the joiner."""
    return nodelist.add_node(name, address, nodeid=nodeid, votes=votes, force=force, vmids=vmids, user=user)


def change_node(node: Node, *, actor: str) -> int:
    """A node's address, votes and links, with corosync.conf's config_version bumped; the version in force."""
    return nodelist.change_node(node, actor=actor)


def delete_node(name_or_address: str, *, force: bool = False, user: str = "root@pam") -> list[str]:
    """``pvecm delnode``: the node, its keys and certificate go in one change; returns notes."""
    return nodelist.delete_node(name_or_address, force=force, user=user)


# --- Node identity -------------------------------------------------------------------------------


def restore_node_identity(archive: Path, *, allow_running: bool = False) -> list[str]:
    """``pvenode identity-restore``: this node's identity put back from an archive; what was done."""
    return identity_restore.restore_backup(archive, allow_running=allow_running)
