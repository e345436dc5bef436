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
import secrets
import selectors
import socket
import time
from pathlib import Path
from typing import Any

COMMANDS = ("qmp_capabilities", "query-status", "query-blockstats", "query-balloon")


def _request(token: str) -> bytes:
    """The round's commands, with ids unique to the round.

    Should a round hang up before QEMU answers, a late reply reaching the monitor's next client
    carries an id that client never used (QMP clients drop those), and a late reply from another
    round is never taken for this round's.
    """
    return b"".join(
        json.dumps({"execute": name, "id": f"{token}-{index}"}).encode() + b"\n" for index, name in enumerate(COMMANDS)
    )


def _parse(lines: list[bytes], token: str) -> dict[str, Any] | None:
    """The round's answers (by id: greeting, events and strays left out); None if any is missing."""
    messages = [json.loads(line) for line in lines if line.strip()]
    replies = {m["id"]: m for m in messages if isinstance(m, dict) and "id" in m and ("return" in m or "error" in m)}
    ids = [f"{token}-{index}" for index in range(len(COMMANDS))]
    if any(i not in replies for i in ids):
        return None
    status, blockstats, balloon = (replies[i] for i in ids[1:])
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
    token = f"pvestatd-{secrets.token_hex(4)}"
    request = _request(token)
    buffers: dict[int, bytearray] = {}
    results: dict[int, dict[str, Any] | None] = dict.fromkeys(sockets)
    connections: dict[int, socket.socket] = {}
    for vmid, path in sockets.items():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(str(path))
            sock.sendall(request)  # small: fits the socket buffer of a fresh connection
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
                        answer = _parse(lines[:-1], token)
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
