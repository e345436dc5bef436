"""The collector's QMP round: every running VM asked at once, pipelined, over plain sockets.

qemu.qmp (used for one-off questions, :mod:`vms.status.qmp`) costs about 2 ms of CPU per VM per
round in its asyncio machinery (measured by ``bench/status_collector.py``): 100 VMs every 2 s
would take a tenth of a core. Here each VM gets one non-blocking connection; the capabilities
handshake and the queries are written in one go (QMP answers commands in order), the answers
are read as they come, and one deadline bounds the whole round: a hung QEMU only loses its own
answer.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import time
from pathlib import Path
from typing import Any

COMMANDS = ("qmp_capabilities", "query-status", "query-blockstats", "query-balloon")
REQUEST = b"".join(json.dumps({"execute": name}).encode() + b"\n" for name in COMMANDS)


def _parse(lines: list[bytes]) -> dict[str, Any] | None:
    """The answers after the greeting, in command order; None if any is missing."""
    messages = [json.loads(line) for line in lines if line.strip()]
    replies = [m for m in messages if "return" in m or "error" in m]  # greeting and events left out
    if len(replies) < len(COMMANDS):
        return None
    status, blockstats, balloon = replies[1], replies[2], replies[3]
    if "return" not in status or "return" not in blockstats:
        return None
    answer: dict[str, Any] = {"qmpstatus": str(status["return"].get("status", "unknown"))}
    read = written = 0
    for device in blockstats["return"]:
        stats = device.get("stats", {})
        read += int(stats.get("rd_bytes", 0))
        written += int(stats.get("wr_bytes", 0))
    answer["diskread"], answer["diskwrite"] = read, written
    if "return" in balloon:
        answer["balloon"] = int(balloon["return"].get("actual", 0))
    return answer


def query_all(sockets: dict[int, Path], timeout: float = 1.0) -> dict[int, dict[str, Any] | None]:
    """``{vmid: {qmpstatus, diskread, diskwrite, balloon?}}``; None for a VM that did not answer in time."""
    selector = selectors.DefaultSelector()
    buffers: dict[int, bytearray] = {}
    results: dict[int, dict[str, Any] | None] = dict.fromkeys(sockets)
    connections: dict[int, socket.socket] = {}
    for vmid, path in sockets.items():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(str(path))
            sock.sendall(REQUEST)  # small: fits the socket buffer of a fresh connection
        except OSError:
            sock.close()
            continue
        buffers[vmid], connections[vmid] = bytearray(), sock
        selector.register(sock, selectors.EVENT_READ, vmid)
    deadline = time.monotonic() + timeout
    try:
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in selector.select(remaining):
                vmid, sock = key.data, connections[key.data]
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                done = not chunk
                if chunk:
                    buffers[vmid] += chunk
                    lines = bytes(buffers[vmid]).split(b"\n")
                    with contextlib.suppress(ValueError):
                        answer = _parse(lines[:-1])
                        if answer is not None:
                            results[vmid], done = answer, True
                if done:
                    selector.unregister(sock)
                    sock.close()
    finally:
        for key in list(selector.get_map().values()):
            connections[key.data].close()
        selector.close()
    return results
