"""Run inside a lab node's namespace: report quorum, or multicast and record the delivery order."""

from __future__ import annotations

import json
import select
import sys
import time

from replicator.corosync import CorosyncError
from replicator.corosync.cpg import CpgGroup
from replicator.corosync.quorum import Votequorum


def quorum() -> dict[str, object]:
    try:
        info = Votequorum().info()
    except CorosyncError as exc:
        return {"error": str(exc)}
    return {"quorate": info.quorate, "total_votes": info.total_votes, "expected": info.expected_votes}


def order(count: int, members: int, tag: str) -> dict[str, object]:
    delivered: list[str] = []
    joined: list[int] = []
    group = CpgGroup(
        "pve-lab-order",
        on_deliver=lambda nodeid, pid, message: delivered.append(message.decode()),
        # the largest membership seen: peers that finish first leave the group before we do
        on_confchg=lambda current, left, new: (
            joined.__setitem__(slice(None), [m.nodeid for m in current]) if len(current) > len(joined) else None
        ),
    )
    deadline = time.monotonic() + 30
    while len(joined) < members and time.monotonic() < deadline:
        select.select([group.fileno()], [], [], 0.2)
        group.dispatch()
    sent = 0
    while len(delivered) < members * count and time.monotonic() < deadline:
        if sent < count:
            group.mcast(f"{tag}:{sent}".encode())
            sent += 1
        ready, _, _ = select.select([group.fileno()], [], [], 0 if sent < count else 0.2)
        if ready:
            group.dispatch()
    group.close()
    return {"members": sorted(joined), "delivered": delivered}


if __name__ == "__main__":
    if sys.argv[1] == "quorum":
        print(json.dumps(quorum()))
    else:
        print(json.dumps(order(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])))
