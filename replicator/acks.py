"""Apply acknowledgements: a write is answered only once nodes holding enough votes have applied it.

Corosync's extended virtual synchrony can deliver a message, in the transitional configuration
of a partition, only to the sender's side. A node cut off just as it multicasts may therefore
apply its own change set while the quorate side never sees it. Waiting for acknowledgements
closes that hole when the nodes that applied the change set (S) meet every partition that can
be quorate later: the votes outside S must stay below the quorum,

    votes(S) > expected - quorum

with ``expected`` every vote that exists, a QDevice's included (a device applies nothing, so
its votes are always outside S). The rule counts votes, not nodes: a joining node (0 votes
until it has synced) or a node with several votes weighs what votequorum says it weighs, and
an acknowledgement from a node whose votes are not known counts nothing. Any quorate
partition that forms later then contains a node that applied the change set, and its sync
round carries it to the rest.

One exception, kept from before and made explicit: a partition that is quorate only through a
QDevice's vote (or ``two_node``, or an operator's ``pvecm expected``) cannot reach that many
votes with its nodes alone, and the device exists so that such a partition keeps working.
There, every voting node present must have applied the change set (as Proxmox's pmxcfs, a lone
node plus the device writes). What remains is the risk the device itself arbitrates: the write
is lost only if the device later gives its vote to a partition of the absent nodes; the sync
round then keeps this side's history as a diverged state (``replicator.divergence``), never
silently. The exception holds only while votequorum reports this partition quorate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from replicator.corosync.quorum import QuorumInfo


def needed_votes(expected: int, quorum: int, partition: int | None) -> int:
    """Votes the nodes that applied a change set must hold before its writer is answered.

    ``partition``: the votes of the nodes in this node's quorate partition (the device's not
    included), or None when the partition is not quorate (no exception then). The quorum is
    taken no larger than a majority of ``expected``: votequorum never lowers a node's quorum by
    itself, so another partition may count a lower one.
    """
    strict = expected - min(quorum, expected // 2 + 1) + 1
    if partition is not None:
        strict = min(strict, partition)  # quorate through the device: every voting node present
    return max(1, strict)


@dataclass(frozen=True)
class VoteView:
    """votequorum's figures at one moment, as the acknowledgement rule needs them."""

    expected: int  # every vote that exists, a QDevice's included
    quorum: int
    partition: int | None  # votes of the nodes in this quorate partition; None when not quorate
    nodes: Mapping[int, int] = field(default_factory=dict)  # node id -> votes, as votequorum reports them

    @property
    def needed(self) -> int:
        return needed_votes(self.expected, self.quorum, self.partition)

    def weight(self, nodeid: int) -> int:
        """A node's votes; a node votequorum has not told about counts nothing."""
        return self.nodes.get(nodeid, 0)

    def holding(self, nodeids: set[int]) -> int:
        return sum(self.weight(nodeid) for nodeid in nodeids)


def view_from(info: QuorumInfo, nodes: Mapping[int, int], configured: int | None) -> VoteView:
    """The view from the local node's votequorum info, each member's votes and the nodelist's votes.

    ``expected`` is the largest of votequorum's expected votes and the votes the nodelist and the
    device are configured with: an expected count lowered at runtime (``pvecm expected``) does
    not make the votes of the nodes elsewhere disappear.
    """
    device = info.qdevice_votes if info.qdevice_cast_vote else 0
    configured_total = (configured or 0) + info.qdevice_votes
    return VoteView(
        expected=max(info.expected_votes, info.highest_expected, info.total_votes, configured_total),
        quorum=info.quorum,
        partition=info.total_votes - device if info.quorate else None,
        nodes=dict(nodes),
    )


def designated(origin: str, names: list[str], votes: Mapping[str, int | None], target: int) -> list[str]:
    """The peers that acknowledge a change set from ``origin``: the same choice on every node.

    The next members after the origin in name order, until they and the origin hold ``target``
    votes. A node known to hold no vote is skipped (its acknowledgement would count nothing);
    one whose votes are not known here is asked but counted as none.
    """
    ordered = sorted(set(names))
    at = ordered.index(origin)
    held = votes.get(origin) or 0
    chosen: list[str] = []
    for name in ordered[at + 1 :] + ordered[:at]:
        if held >= target:
            break
        weight = votes.get(name)
        if weight == 0:
            continue
        chosen.append(name)
        held += weight or 0
    return chosen


class AckTracker:
    """The newest (version, hash) each node reported applied, within the current membership."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.acked: dict[int, tuple[int, str]] = {}

    def ack(self, nodeid: int, version: int, head: str) -> None:
        with self.cond:
            if version >= self.acked.get(nodeid, (0, ""))[0]:
                self.acked[nodeid] = (version, head)
                self.cond.notify_all()

    def forget_except(self, nodeids: set[int]) -> None:
        """On a membership change: acks from nodes that left no longer count."""
        with self.cond:
            for nodeid in [n for n in self.acked if n not in nodeids]:
                del self.acked[nodeid]
            self.cond.notify_all()

    def applied_by(self, version: int, head: str) -> set[int]:
        """The nodes that reported ``version`` (with this hash) or a later one applied."""
        return {n for n, (v, h) in self.acked.items() if v > version or (v == version and h == head)}

    def votes(self, version: int, head: str, view: VoteView) -> int:
        return view.holding(self.applied_by(version, head))

    def wait(
        self,
        version: int,
        head: str,
        view: Callable[[], VoteView | None],
        alive: Callable[[], bool],
        deadline: float,
    ) -> bool:
        """True once the nodes that applied ``version`` hold the votes ``view()`` needs.

        False on timeout or when ``alive()`` fails. No view (votequorum's figures not known)
        confirms nothing.
        """
        with self.cond:
            while True:
                current = view()
                if current is not None and self.votes(version, head, current) >= current.needed:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not alive():
                    return False
                self.cond.wait(min(remaining, 0.05))
