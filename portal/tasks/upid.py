"""Proxmox task ids: ``UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

UPID_RE = re.compile(
    r"^UPID:(?P<node>[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?):(?P<pid>[0-9A-F]{8}):(?P<pstart>[0-9A-F]{8,9}):"
    r"(?P<starttime>[0-9A-F]{8}):(?P<type>[^:\s/]+):(?P<id>[^:\s/]*):(?P<user>[^:\s/]+):$"
)


@dataclass(frozen=True)
class UPID:
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str

    def __str__(self) -> str:
        return (
            f"UPID:{self.node}:{self.pid:08X}:{self.pstart:08X}:{self.starttime:08X}:{self.type}:{self.id}:{self.user}:"
        )


def parse_upid(text: str) -> UPID:
    """Parse a UPID; ValueError if it is not one."""
    match = UPID_RE.match(text)
    if match is None:
        raise ValueError(f"unable to parse worker upid '{text}'")
    return UPID(
        node=match["node"],
        pid=int(match["pid"], 16),
        pstart=int(match["pstart"], 16),
        starttime=int(match["starttime"], 16),
        type=match["type"],
        id=match["id"],
        user=match["user"],
    )


def process_start_ticks(pid: int | None = None) -> int:
    """Field 22 of /proc/<pid>/stat: start time in clock ticks since boot (UPID ``pstart``)."""
    stat = open(f"/proc/{pid or os.getpid()}/stat").read()  # noqa: SIM115
    return int(stat.rsplit(")", 1)[1].split()[19])
