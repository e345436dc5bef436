"""Volatile node status: load, memory, uptime, clock, address, recent tasks, travelling over CPG.

Never written to disk: every replicator multicasts its own node's status every few seconds
and keeps what the others sent in memory. A node that leaves the CPG membership is shown
offline at once, with its last report kept for display.

Clocks: a message carries ``clock``, the sender's time when it was sent, and the receiver stamps
``received`` from its own clock; their difference is the sender's clock offset (plus the CPG
transit, well under a millisecond): enough to warn about skewed clocks.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from replicator import faults

log = logging.getLogger(__name__)

Collector = Callable[[], dict[str, Any]]
_collectors: list[Collector] = []


def register_collector(collector: Collector) -> Collector:
    """Apps add fields to this node's status (``cluster`` adds load, memory, tasks)."""
    _collectors.append(collector)
    return collector


def now() -> float:
    """This node's clock as status messages see it (shifted only by fault injection, for tests)."""
    return time.time() + faults.clock_offset()


def collect(node: str, nodeid: int) -> dict[str, Any]:
    data: dict[str, Any] = {"node": node, "nodeid": nodeid}
    for collector in _collectors:
        try:
            data.update(collector())
        except Exception:  # one broken collector must not silence the node (and its clock)
            log.exception("status collector %r failed", collector)
    stamp = now()  # taken last, right before sending
    data["clock"] = stamp
    data["time"] = int(stamp)
    return data


class StatusBoard:
    """The latest status of every node, and which nodes are members right now."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.nodes: dict[str, dict[str, Any]] = {}
        self.online: set[int] = set()

    def update(self, message: bytes) -> None:
        data = json.loads(message)
        data["received"] = now()
        with self.lock:
            self.nodes[str(data["node"])] = data

    def members(self, nodeids: set[int]) -> None:
        with self.lock:
            self.online = set(nodeids)

    def snapshot(self, fields: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Every node's last status; with ``fields``, only those (plus name, id, times and online)."""
        keep = None if not isinstance(fields, list) else {*map(str, fields), "node", "nodeid", "received", "clock"}
        with self.lock:
            return {
                name: {
                    **(data if keep is None else {k: v for k, v in data.items() if k in keep}),
                    "online": int(data.get("nodeid") in self.online),
                }
                for name, data in self.nodes.items()
            }
