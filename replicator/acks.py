"""Apply acknowledgements: a write is answered only once a quorum of nodes has applied it.

Corosync's extended virtual synchrony can deliver a message, in the transitional configuration
of a partition, only to the sender's side. A node cut off just as it multicasts may therefore
apply its own change set while the quorate side never sees it. Waiting for acknowledgements
from members holding a quorum of votes (one vote per node) closes that hole: any quorate
partition that forms later contains at least one node that applied the change set, and the
sync round carries it to the rest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


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

    def count(self, version: int, head: str) -> int:
        return sum(1 for v, h in self.acked.values() if v > version or (v == version and h == head))

    def wait(
        self, version: int, head: str, needed: Callable[[], int], alive: Callable[[], bool], deadline: float
    ) -> bool:
        """True once ``needed()`` nodes applied ``version``; False on timeout or when ``alive()`` fails."""
        with self.cond:
            while self.count(version, head) < needed():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not alive():
                    return False
                self.cond.wait(min(remaining, 0.05))
        return True
