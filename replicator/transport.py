"""Transports deliver change sets to every member in one agreed order.

The local transport serves a node that is not (yet) in a cluster: always quorate, delivering
each submitted message straight back to this node. The corosync transport implements the same
interface over CPG.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import Any, TypedDict

from replicator.acks import VoteView
from replicator.exceptions import NotQuorateError
from replicator.volatile import StatusBoard

log = logging.getLogger(__name__)

# Events delivered in agreed order: ("C", origin, change set bytes), ("confchg", members, me),
# ("S", sender, sync message bytes), ("lost",) when the connection to the group is gone.
Sink = Callable[[tuple[Any, ...]], None]


class TransportStatus(TypedDict, total=False):
    """A transport's membership facts (``describe()``), merged into the replicator's status answer."""

    transport: str
    quorate: bool
    cluster_name: str
    config_version: int
    connected: bool
    corosync_quorate: bool
    stalled: bool
    nodeid: int
    members: list[int]
    token_timeout_ms: int
    member: bool
    votes: dict[str, Any] | None
    error: str


class Transport(abc.ABC):
    """What the replicator needs from group communication."""

    board: StatusBoard | None = None

    @abc.abstractmethod
    def start(self, sink: Sink) -> None:
        """Begin delivering events to ``sink`` in agreed order."""

    @abc.abstractmethod
    def submit(self, payload: bytes) -> None:
        """Multicast ``payload``; raises NotQuorateError when this partition may not write."""

    @abc.abstractmethod
    def quorate(self) -> bool:
        """Whether this node's partition has quorum right now."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop delivering."""

    def send_sync(self, message: bytes) -> None:
        """Multicast a sync-protocol message; a single node never needs one."""
        raise NotImplementedError

    def send_ack(self, version: int, head: str, *, broadcast: bool = True) -> None:
        """Tell the members this node applied up to ``version``; a single node has no one to tell."""
        return None

    def send_status(self, message: bytes) -> None:
        """Publish this node's volatile status to the members (kept in memory only)."""
        if self.board is not None:
            self.board.update(message)

    def vote_view(self) -> VoteView | None:
        """The votes of the members and the votes a write needs (``replicator.acks``); None when not known."""
        return None

    def describe(self) -> TransportStatus:
        """Membership facts for status output."""
        return {"transport": type(self).__name__, "quorate": self.quorate()}


class LocalTransport(Transport):
    """A single node outside any cluster: its own agreed order is the submission order."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.board = StatusBoard()
        self.board.members({0})
        self._sink: Sink | None = None

    def start(self, sink: Sink) -> None:
        self._sink = sink

    def submit(self, payload: bytes) -> None:
        if self._sink is None:
            raise NotQuorateError("replicator transport not started")
        self._sink(("C", self.node_name, payload))

    def quorate(self) -> bool:
        return self._sink is not None

    def stop(self) -> None:
        self._sink = None


RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: "start me again" to runnode and to systemd's Restart=on-failure
