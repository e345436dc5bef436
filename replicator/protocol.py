"""Framing of the unix-socket IPC between Django processes and the replicator.

Each message is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

HEADER = struct.Struct("!I")
MAX_MESSAGE = 256 * 1024 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not a framed JSON message, or hung up mid-message."""


def send_message(sock: socket.socket, message: dict[str, Any], payload: bytes | None = None) -> None:
    """Send one framed JSON message, followed by a raw frame when ``payload`` is given (one syscall)."""
    data = json.dumps(message, separators=(",", ":")).encode()
    frames = HEADER.pack(len(data)) + data
    if payload is not None:
        frames += HEADER.pack(len(payload)) + payload
    sock.sendall(frames)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ProtocolError("connection closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_raw(sock: socket.socket, limit: int = MAX_MESSAGE) -> bytes:
    """Receive one frame's bytes; a length over ``limit`` is refused without reading it."""
    (size,) = HEADER.unpack(_recv_exact(sock, HEADER.size))
    if size > limit:
        raise ProtocolError(f"message of {size} bytes exceeds the limit of {limit}")
    return _recv_exact(sock, size)


def recv_message(sock: socket.socket, limit: int = MAX_MESSAGE) -> dict[str, Any]:
    """Receive one framed JSON object."""
    data = recv_raw(sock, limit)
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("message is not a JSON object")
    return message
