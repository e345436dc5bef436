"""The sync round's pure parts: its wire framing and the plan every member computes alike."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

MemberId = tuple[int, int]


def pack(header: dict[str, Any], blob: bytes = b"") -> bytes:
    data = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">I", len(data)) + data + blob


def unpack(message: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack(">I", message[:4])
    return json.loads(message[4 : 4 + length]), message[4 + length :]


@dataclass
class MemberState:
    node: str
    version: int
    hash: str
    low: int


# Why a member takes a snapshot instead of a delta. Only a member whose history is proven to be a
# prefix of the winner's loses nothing by it; every other one keeps its state as a dated file.
BEHIND = "behind"  # a proven prefix, too far behind for a delta (or empty)
FORKED = "forked"  # proven different: another hash at the same version, or ahead of the winner
UNPROVEN = "unproven"  # its version is older than the winner's retained change log: cannot be checked


@dataclass
class Plan:
    winner: MemberId
    sender: MemberId
    delta: dict[MemberId, int]  # receiver -> its version
    snapshot: dict[MemberId, str]  # receiver -> BEHIND, FORKED or UNPROVEN

    def keeps_state(self, member: MemberId) -> bool:
        """Whether ``member``'s state must be kept (as a file, in the cluster log) before it is replaced."""
        return self.snapshot.get(member, BEHIND) != BEHIND


def make_plan(states: dict[MemberId, MemberState], hashes: dict[MemberId, dict[str, str | None]]) -> Plan:
    """The same plan on every member: who holds the winning history, who needs what.

    A history counts as a prefix of another only when proven by the hash chain; a version the
    other no longer holds in its change log proves nothing, so such a member is not counted as
    a supporter and, when it loses, keeps its state exactly as a known fork does.
    """
    members = sorted(states)

    def holds(x: MemberId, y: MemberId) -> bool:
        """y's history is proven equal to x's or a prefix of it."""
        sx, sy = states[x], states[y]
        if sy.version >= sx.version:
            return sy.version == sx.version and sy.hash == sx.hash
        return hashes[x].get(str(sy.version)) == sy.hash

    support = {x: sum(holds(x, y) for y in members) for x in members}
    winner = max(members, key=lambda x: (support[x], states[x].version, states[x].hash, -x[0], -x[1]))
    top = states[winner]
    sender = min(m for m in members if (states[m].version, states[m].hash) == (top.version, top.hash))
    # The sender replays its own change log: a delta must start within it (a member that took a
    # snapshot holds only the entries since then, whatever the winner holds).
    low = states[sender].low
    delta: dict[MemberId, int] = {}
    snap: dict[MemberId, str] = {}
    for member in members:
        state = states[member]
        if (state.version, state.hash) == (top.version, top.hash):
            continue
        if holds(winner, member):
            # an empty node takes a snapshot: inserting the rows beats replaying the whole history
            if state.version > 0 and low <= state.version + 1:
                delta[member] = state.version
            else:
                snap[member] = BEHIND
        elif state.version >= top.version or hashes[winner].get(str(state.version)) is not None:
            snap[member] = FORKED
        else:
            snap[member] = UNPROVEN
    return Plan(winner, sender, delta, snap)
