"""Live cluster status from corosync (cmap, votequorum, CPG totem), and ``pvecm``'s text formats."""

from __future__ import annotations

import select
import time
from dataclasses import dataclass

from replicator.corosync.cmap import Cmap
from replicator.corosync.cpg import CpgGroup
from replicator.corosync.errors import CorosyncError
from replicator.corosync.quorum import (
    VOTEQUORUM_INFO_ALLOW_DOWNSCALE,
    VOTEQUORUM_INFO_AUTO_TIE_BREAKER,
    VOTEQUORUM_INFO_LAST_MAN_STANDING,
    VOTEQUORUM_INFO_QDEVICE_CAST_VOTE,
    VOTEQUORUM_INFO_QDEVICE_REGISTERED,
    QuorumInfo,
    Votequorum,
)

VOTEQUORUM_NODESTATE_MEMBER = 1


@dataclass(frozen=True)
class MemberStatus:
    nodeid: int
    votes: int
    name: str
    address: str
    local: bool
    qdevice: str = ""  # corosync-quorumtool's per-node QDevice flags: "A,V,NMW", or "NR" (not registered)


@dataclass(frozen=True)
class ClusterStatus:
    name: str
    config_version: int
    transport: str
    secure_auth: bool
    local_nodeid: int
    ring_id: str
    quorate: bool
    expected_votes: int
    highest_expected: int
    total_votes: int
    quorum: int
    two_node: bool
    wait_for_all: bool
    members: list[MemberStatus]
    flags: int = 0  # the local node's VOTEQUORUM_INFO_* bits
    qdevice_votes: int = 0
    qdevice_name: str = ""

    @property
    def qdevice_shown(self) -> bool:
        """Whether a member has a QDevice registered: the member table gets its column and line."""
        return any(m.qdevice and m.qdevice != "NR" for m in self.members)


def _ring_id(timeout: float = 2.0) -> str:
    """``<nodeid>.<seq hex>`` of the current totem ring, from CPG's initial totem notification."""
    rings: list[str] = []
    group = CpgGroup(
        "pvecm-status",
        on_deliver=lambda *_: None,
        on_confchg=lambda *_: None,
        on_totem=lambda nodeid, seq, _members: rings.append(f"{nodeid:x}.{seq:x}"),
    )
    try:
        deadline = time.monotonic() + timeout
        while not rings and time.monotonic() < deadline:
            select.select([group.fileno()], [], [], 0.1)
            group.dispatch()
    finally:
        group.close()
    return rings[-1] if rings else "?"


def qdevice_flags(info: QuorumInfo) -> str:
    """``A,V,NMW``: alive or not, casting its vote or not, master wins or not; ``NR`` when not registered."""
    if not info.qdevice_registered:
        return "NR"
    return ",".join(
        (
            "A" if info.qdevice_alive else "NA",
            "V" if info.qdevice_cast_vote else "NV",
            "MW" if info.qdevice_master_wins else "NMW",
        )
    )


def online_nodeids(nodeids: list[int] | None = None) -> set[int]:
    """Node ids votequorum counts as members now (of ``nodeids``, default: corosync's nodelist)."""
    cmap = Cmap()
    quorum = Votequorum()
    try:
        if nodeids is None:
            nodeids = [int(entry["nodeid"]) for entry in cmap.nodes()]
        online = set()
        for nodeid in nodeids:
            try:
                info = quorum.info(nodeid)
            except CorosyncError:
                continue
            if info.node_id == nodeid and info.node_state == VOTEQUORUM_NODESTATE_MEMBER:
                online.add(nodeid)
        return online
    finally:
        quorum.close()
        cmap.close()


def read_status() -> ClusterStatus:
    """Read everything ``pvecm status`` shows (CorosyncError when corosync is not reachable)."""
    cmap = Cmap()
    quorum = Votequorum()
    try:
        local = quorum.info()
        members = []
        for entry in cmap.nodes():
            nodeid = int(entry["nodeid"])
            try:
                info = quorum.info(nodeid)
            except CorosyncError:  # listed but never seen (a node added that has not joined yet)
                continue
            if info.node_id == nodeid and info.node_state == VOTEQUORUM_NODESTATE_MEMBER:
                members.append(
                    MemberStatus(
                        nodeid=nodeid,
                        votes=info.node_votes,
                        name=str(entry["name"] or ""),
                        address=str(entry["ring0_addr"] or ""),
                        local=nodeid == local.node_id,
                        qdevice=qdevice_flags(info),
                    )
                )
        crypto = cmap.get_string("totem.crypto_cipher")
        config_version = cmap.get_uint("totem.config_version")
        return ClusterStatus(
            name=cmap.get_string("totem.cluster_name") or "UNKOWN?",  # sic, as Proxmox prints it
            config_version=-1 if config_version is None else config_version,
            transport=cmap.get_string("totem.transport") or "knet",
            secure_auth=crypto not in (None, "none"),
            local_nodeid=local.node_id,
            ring_id=_ring_id(),
            quorate=local.quorate,
            expected_votes=local.expected_votes,
            highest_expected=local.highest_expected,
            total_votes=local.total_votes,
            quorum=local.quorum,
            two_node=local.two_node,
            wait_for_all=local.wait_for_all,
            members=sorted(members, key=lambda m: m.nodeid),
            flags=local.flags,
            qdevice_votes=local.qdevice_votes,
            qdevice_name=local.qdevice_name,
        )
    finally:
        quorum.close()
        cmap.close()


def _section(title: str) -> list[str]:
    return [title, "-" * len(title)]


def _field(label: str, value: object) -> str:
    return f"{label + ':':<17} {value}"


def format_status(status: ClusterStatus, *, now: float | None = None) -> str:
    # corosync-quorumtool's order (2Node first); LastManStanding and later only from the flag bits.
    flags = ["2Node"] if status.two_node else []
    flags += ["Quorate"] if status.quorate else []
    flags += ["WaitForAll"] if status.wait_for_all else []
    flags += [name for bit, name in _LATER_FLAGS if status.flags & bit]
    lines = [
        *_section("Cluster information"),
        _field("Name", status.name),
        _field("Config Version", status.config_version),
        _field("Transport", status.transport),
        _field("Secure auth", "on" if status.secure_auth else "off"),
        "",
        *_section("Quorum information"),
        _field("Date", time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(now))),
        _field("Quorum provider", "corosync_votequorum"),
        _field("Nodes", len(status.members)),
        _field("Node ID", f"0x{status.local_nodeid:08x}"),
        _field("Ring ID", status.ring_id),
        _field("Quorate", "Yes" if status.quorate else "No"),
        "",
        *_section("Votequorum information"),
        _field("Expected votes", status.expected_votes),
        _field("Highest expected", status.highest_expected),
        _field("Total votes", status.total_votes),
        _field("Quorum", f"{status.quorum} {'' if status.quorate else ' Activity blocked'}".rstrip()),
        _field("Flags", " ".join(flags)),
        "",
        *_section("Membership information"),
        *_member_table(status, [f"0x{m.nodeid:08x}" for m in status.members], [m.address for m in status.members]),
    ]
    return "\n".join(lines) + "\n"


_LATER_FLAGS = (
    (VOTEQUORUM_INFO_LAST_MAN_STANDING, "LastManStanding"),
    (VOTEQUORUM_INFO_AUTO_TIE_BREAKER, "AutoTieBreaker"),
    (VOTEQUORUM_INFO_ALLOW_DOWNSCALE, "AllowDownscale"),
    (VOTEQUORUM_INFO_QDEVICE_REGISTERED, "Qdevice"),
)


def _member_table(status: ClusterStatus, ids: list[str], names: list[str], *, hex_ids: bool = True) -> list[str]:
    """corosync-quorumtool's table: ``Nodeid Votes [Qdevice] Name``, then the QDevice's own line.

    The QDevice line shows its votes only while this node's QDevice casts its vote, else 0 and
    ``(votes N)``, as corosync-quorumtool does.
    """
    qdevice = status.qdevice_shown
    lines = [f"{'Nodeid':>10} {'Votes':>10} " + (f"{'Qdevice':>10} " if qdevice else "") + "Name"]
    for member, nodeid, name in zip(status.members, ids, names, strict=True):
        column = f"{member.qdevice:>10} " if qdevice else ""
        lines.append(f"{nodeid:>10} {member.votes:>10} {column}{name}{' (local)' if member.local else ''}")
    if qdevice:
        casting = bool(status.flags & VOTEQUORUM_INFO_QDEVICE_CAST_VOTE)
        nodeid = "0x00000000" if hex_ids else "0"
        suffix = "" if casting else f" (votes {status.qdevice_votes})"
        votes = status.qdevice_votes if casting else 0
        lines.append(f"{nodeid:>10} {votes:>10}            {status.qdevice_name}{suffix}")
    return lines


def format_nodes(status: ClusterStatus) -> str:
    ids = [str(m.nodeid) for m in status.members]
    lines = [
        *_section("Membership information"),
        *_member_table(status, ids, [m.name for m in status.members], hex_ids=False),
    ]
    return "\n".join(lines) + "\n"
