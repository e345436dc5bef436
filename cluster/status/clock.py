"""Clock skew between nodes, from the volatile status this node receives.

Tickets (valid from their signing time), task start times and the cluster log assume the nodes'
clocks agree; Proxmox expects NTP on every node and warns when they drift. Each status message
carries its sender's clock when sent, and the receiver stamps its own clock on arrival: the
difference is the sender's offset from this node (plus the CPG transit, well under a millisecond;
the status interval does not enter, each message is stamped when sent). Offsets are compared with
their median over the online nodes, so every node names the same outlier, and a warning is raised
once two online nodes differ by more than ``PVE_CLOCK_SKEW_WARN`` seconds.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, TypeGuard

from django.conf import settings

from replicator import client
from replicator.exceptions import ReplicationError

Board = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class NodeClock:
    """One online node's clock: ``offset`` from this node's, ``skew`` from the median of all."""

    node: str
    offset: float
    skew: float
    warn: bool


def offsets(board: Board) -> dict[str, float]:
    """Seconds each online node's clock is ahead of this node's: its send time minus our arrival time."""
    result: dict[str, float] = {}
    for name, entry in board.items():
        if not entry.get("online"):
            continue
        sent = entry.get("clock", entry.get("time"))  # whole-second ``time`` from a node without ``clock``
        received = entry.get("received")
        if _number(sent) and _number(received):
            result[name] = float(sent) - float(received)
    return result


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def node_clocks(board: Board, threshold: float | None = None) -> dict[str, NodeClock]:
    """Offset and skew of every online node; ``warn`` for those far from the median when clocks disagree.

    A node is flagged when the online nodes' offsets spread over more than ``threshold`` and its own
    lies more than half of it from the median (with two nodes, both: nobody can tell which is right).
    """
    limit = float(settings.PVE_CLOCK_SKEW_WARN if threshold is None else threshold)
    found = offsets(board)
    if not found:
        return {}
    median = statistics.median(found.values())
    spread = max(found.values()) - min(found.values())
    return {
        name: NodeClock(name, offset, offset - median, spread > limit and abs(offset - median) > limit / 2)
        for name, offset in found.items()
    }


def warnings(clocks: dict[str, NodeClock], threshold: float | None = None) -> list[str]:
    """The operator's warning line (empty when the clocks agree)."""
    limit = float(settings.PVE_CLOCK_SKEW_WARN if threshold is None else threshold)
    flagged = sorted((clock for clock in clocks.values() if clock.warn), key=lambda clock: clock.node)
    if not flagged:
        return []
    spread = max(c.offset for c in clocks.values()) - min(c.offset for c in clocks.values())
    skewed = ", ".join(f"{clock.node} {clock.skew:+.1f} s" for clock in flagged)
    return [
        f"WARNING: node clocks differ by {spread:.1f} s (more than {limit:g} s): {skewed} "
        f"from the median of {len(clocks)} nodes; check time synchronisation (NTP) on these nodes"
    ]


def live_board() -> Board:
    """The status board of the local replicator; empty when it cannot answer."""
    try:
        return dict(client.request({"op": "cluster_status"}, timeout=5).get("nodes") or {})
    except ReplicationError:
        return {}


def live_warnings() -> list[str]:
    """Warnings about the clocks of the nodes this node hears now (``pvecm status``, the admin index)."""
    return warnings(node_clocks(live_board()))


def api_fields(clock: NodeClock | None) -> dict[str, Any]:
    """Extra fields of a ``/cluster/status`` node entry: its skew from the median and whether it is too far."""
    if clock is None:
        return {}
    return {"clock_offset": round(clock.skew, 3), "clock_warning": int(clock.warn)}
