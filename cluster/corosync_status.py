"""Live cluster status from corosync (cmap, votequorum, CPG totem), and ``pvecm``'s text formats."""

from __future__ import annotations

import select
import time
from dataclasses import dataclass

from replicator.corosync.cmap import Cmap
from replicator.corosync.cpg import CpgGroup
from replicator.corosync.quorum import Votequorum

VOTEQUORUM_NODESTATE_MEMBER = 1


@dataclass(frozen=True)
class MemberStatus:
    nodeid: int
    votes: int
    name: str
    address: str
    local: bool


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


def read_status() -> ClusterStatus:
    """Read everything ``pvecm status`` shows (CorosyncError when corosync is not reachable)."""
    cmap = Cmap()
    quorum = Votequorum()
    try:
        local = quorum.info()
        members = []
        for entry in cmap.nodes():
            nodeid = int(entry["nodeid"])  # type: ignore[arg-type]
            info = quorum.info(nodeid)
            if info.node_id == nodeid and info.node_state == VOTEQUORUM_NODESTATE_MEMBER:
                members.append(
                    MemberStatus(
                        nodeid=nodeid,
                        votes=info.node_votes,
                        name=str(entry["name"] or ""),
                        address=str(entry["ring0_addr"] or ""),
                        local=nodeid == local.node_id,
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
        )
    finally:
        quorum.close()
        cmap.close()


def _section(title: str) -> list[str]:
    return [title, "-" * len(title)]


def _field(label: str, value: object) -> str:
    return f"{label + ':':<17} {value}"


def format_status(status: ClusterStatus, *, now: float | None = None) -> str:
    flags = ["Quorate"] if status.quorate else []
    flags += ["2Node"] if status.two_node else []
    flags += ["WaitForAll"] if status.wait_for_all else []
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
        f"{'Nodeid':>10} {'Votes':>10} Name",
    ]
    lines += [f"0x{m.nodeid:08x} {m.votes:>10} {m.address}{' (local)' if m.local else ''}" for m in status.members]
    return "\n".join(lines) + "\n"


def format_nodes(status: ClusterStatus) -> str:
    lines = [*_section("Membership information"), f"{'Nodeid':>10} {'Votes':>10} Name"]
    lines += [f"{m.nodeid:>10} {m.votes:>10} {m.name}{' (local)' if m.local else ''}" for m in status.members]
    return "\n".join(lines) + "\n"
