"""Which transport this node runs, and what keeps a cluster member from writing.

A node is a cluster member when its replicated state says so, or while it joins one (its host
files name it); only a node that never joined a cluster runs the local transport. A member that
cannot reach corosync stays a member: read-only, saying why, until corosync is back.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings

from replicator.transport import LocalTransport, Transport, TransportStatus

log = logging.getLogger(__name__)

# Whether this node's replicated state says it is in a cluster (its name, else None). The
# replicator knows no app: the cluster app registers the question when it is ready.
ClusterProbe = Callable[[], str | None]
_cluster_probe: ClusterProbe | None = None
_chosen: str | None = None  # the kind the replicator of this process runs, once chosen


def register_cluster_probe(probe: ClusterProbe) -> None:
    global _cluster_probe
    _cluster_probe = probe


def database_cluster() -> str | None:
    """The cluster this node's database says it belongs to, or None (a node that never joined one)."""
    return _cluster_probe() if _cluster_probe is not None else None


def host_files_name_this_node() -> bool:
    """The corosync authkey exists and the host's corosync.conf lists this node (a node joining a cluster)."""
    if not Path(settings.PVE_COROSYNC_AUTHKEY).exists():
        return False
    try:
        text = Path(settings.PVE_COROSYNC_CONF).read_text(errors="replace")
    except OSError:
        return False
    return settings.PVE_NODE_NAME in _conf_names(text)


def _conf_names(text: str) -> list[str]:
    """The node names of a corosync.conf text."""
    return re.findall(r"^\s*name\s*:\s*(\S+)\s*$", text, re.MULTILINE)


def transport_kind() -> str:
    """``PVE_TRANSPORT``, with ``auto`` resolved: ``corosync`` for every node that is or becomes a cluster member.

    Fail closed: a node whose database says it is in a cluster runs over corosync even when its
    authkey or corosync.conf is missing (it is read-only until corosync runs, never a writable
    single node); so does a node whose host files name it (a joining node, whose state is still
    empty). Only a node that never joined a cluster gets the always-quorate local transport.
    """
    if settings.PVE_TRANSPORT != "auto":
        return str(settings.PVE_TRANSPORT)
    if database_cluster() or host_files_name_this_node():
        return "corosync"
    return "local"


def active_kind() -> str:
    """The transport the replicator of this process runs; elsewhere what it would choose now."""
    return _chosen or transport_kind()


def make_transport(node: str) -> Transport:
    """``local`` for a single node, ``corosync`` for a cluster member (see ``transport_kind``)."""
    global _chosen
    _chosen = transport_kind()
    if _chosen == "corosync":
        from replicator.corosync_transport import CorosyncTransport

        return CorosyncTransport(node, settings.PVE_CPG_GROUP)
    return LocalTransport(node)


def cluster_file_problems() -> list[str]:
    """What a cluster member lacks on disk for corosync to start, in words for the operator."""
    authkey, conf = Path(settings.PVE_COROSYNC_AUTHKEY), Path(settings.PVE_COROSYNC_CONF)
    problems = []
    if not authkey.exists():
        problems.append(f"no corosync authkey at {authkey} (copy it from another cluster node, mode 0400)")
    try:
        text = conf.read_text(errors="replace")
    except OSError:
        problems.append(f"no corosync configuration at {conf} (written from the cluster state by the replicator)")
    else:
        if settings.PVE_NODE_NAME not in _conf_names(text):
            problems.append(f"{conf} does not list this node ({settings.PVE_NODE_NAME})")
    return problems


def not_ready_reasons(facts: TransportStatus, *, synced: bool) -> list[str]:
    """Why a cluster member may not write now (``facts``: the transport's ``describe``); empty when it may."""
    if facts.get("transport") != "corosync":
        return []
    reasons: list[str] = []
    if not facts.get("connected"):  # what corosync needs to start matters only while it does not run
        error = facts.get("error")
        reasons += cluster_file_problems()
        reasons.append(f"corosync is not running or not reachable ({error})" if error else "connecting to corosync")
    elif not facts.get("corosync_quorate"):
        members = ", ".join(str(nodeid) for nodeid in facts.get("members") or []) or "none"
        reasons.append(f"no quorum: this partition lacks votes (node ids with a replicator here: {members})")
    elif facts.get("stalled"):
        reasons.append("corosync does not deliver this node's messages within the token timeout")
    elif not facts.get("quorate") and facts.get("member"):
        reasons.append(_missing_votes(facts.get("votes")))
    elif not facts.get("quorate"):
        reasons.append("joining the replicator group")
    elif not synced:
        reasons.append("synchronising the state with the other members")
    return reasons


def _missing_votes(votes: dict[str, Any] | None) -> str:
    """Why a member of a quorate partition cannot confirm a write: the replicators present hold too few votes."""
    if not votes:
        return "the votes of the members are not known yet (votequorum did not answer)"
    held = ", ".join(f"{nodeid}: {count if count is not None else '?'}" for nodeid, count in votes["members"].items())
    return (
        f"the members running a replicator hold {votes['held']} of the {votes['needed']} votes that must confirm "
        f"a write (votes by node id: {held})"
    )


def describe_membership(*, clustered: bool) -> str:
    """What this node is, for the start-up log."""
    cluster = database_cluster()
    if not clustered:
        return "standalone, PVE_TRANSPORT=local (always writable)" if cluster else "standalone (not in a cluster)"
    if cluster:
        return f"a member of cluster {cluster!r}"
    if settings.PVE_TRANSPORT == "corosync":
        return "a cluster member (PVE_TRANSPORT=corosync)"
    return "joining a cluster (its corosync.conf names this node; its state comes from the members)"


READINESS_GRACE = 5.0  # a member normally connects and syncs within this at start: nothing to say then


def report_readiness(node: str, not_ready: Callable[[], list[str]], stopping: threading.Event) -> None:
    """Log soon after start and on every change why this member is read-only, and when it is writable again."""
    said: list[str] | None = None
    stopping.wait(READINESS_GRACE)
    while not stopping.is_set():
        try:
            reasons = not_ready()
        except Exception:  # the report must never end the node
            log.exception("checking whether this node may write failed")
            reasons = said or []
        if reasons != said:
            if reasons:
                log.warning("cluster not ready - no quorum? configuration is read-only: %s", "; ".join(reasons))
            elif said is not None:
                log.info("node %s is quorate and in sync: configuration is writable", node)
            said = reasons
        stopping.wait(1.0)
