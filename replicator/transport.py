"""Transports deliver change sets to every member in one agreed order.

The local transport serves a node that is not (yet) in a cluster: always quorate, delivering
each submitted message straight back to this node. The corosync transport implements the same
interface over CPG.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from replicator.exceptions import NotQuorateError

Deliver = Callable[[str, bytes], None]


class Transport(abc.ABC):
    """What the replicator needs from group communication."""

    @abc.abstractmethod
    def start(self, deliver: Deliver) -> None:
        """Begin delivering messages (origin node, payload) to ``deliver`` in agreed order."""

    @abc.abstractmethod
    def submit(self, payload: bytes) -> None:
        """Multicast ``payload``; raises NotQuorateError when this partition may not write."""

    @abc.abstractmethod
    def quorate(self) -> bool:
        """Whether this node's partition has quorum right now."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop delivering."""

    def describe(self) -> dict[str, object]:
        """Membership facts for status output."""
        return {"transport": type(self).__name__, "quorate": self.quorate()}


class LocalTransport(Transport):
    """A single node outside any cluster: its own agreed order is the submission order."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self._deliver: Deliver | None = None

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def submit(self, payload: bytes) -> None:
        if self._deliver is None:
            raise NotQuorateError("replicator transport not started")
        self._deliver(self.node_name, payload)

    def quorate(self) -> bool:
        return self._deliver is not None

    def stop(self) -> None:
        self._deliver = None
