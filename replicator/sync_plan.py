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


@dataclass
class Plan:
    winner: MemberId
    sender: MemberId
    delta: dict[MemberId, int]  # receiver -> its version
    snapshot: dict[MemberId, bool]  # receiver -> diverged


def make_plan(states: dict[MemberId, MemberState], hashes: dict[MemberId, dict[str, str | None]]) -> Plan:
    """The same plan on every member: who holds the winning history, who needs what."""
    members = sorted(states)

    def holds(x: MemberId, y: MemberId) -> bool:
        """y's history equals x's or is a prefix of it."""
        sx, sy = states[x], states[y]
        if sy.version >= sx.version:
            return sy.version == sx.version and sy.hash == sx.hash
        return hashes[x].get(str(sy.version)) == sy.hash

    support = {x: sum(holds(x, y) for y in members) for x in members}
    winner = max(members, key=lambda x: (support[x], states[x].version, states[x].hash, -x[0], -x[1]))
    top = states[winner]
    sender = min(m for m in members if (states[m].version, states[m].hash) == (top.version, top.hash))
    delta: dict[MemberId, int] = {}
    snap: dict[MemberId, bool] = {}
    for member in members:
        state = states[member]
        if (state.version, state.hash) == (top.version, top.hash):
            continue
        # an empty node takes a snapshot: inserting the rows beats replaying the whole history
        if state.version > 0 and holds(winner, member) and top.low <= state.version + 1:
            delta[member] = state.version
        else:
            known = hashes[winner].get(str(state.version))
            snap[member] = state.version >= top.version or (known is not None and known != state.hash)
    return Plan(winner, sender, delta, snap)
