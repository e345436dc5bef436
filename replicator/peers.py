"""Who may talk to the replicator: root and the node's service user, checked by the kernel's peer credentials.

The socket file is 0600 in the 0700 data directory, but a socket placed elsewhere
(``PVE_REPLICATOR_SOCKET``), a mode loosened by hand or a descriptor passed on must not open the
cluster database to other local users: every accepted connection is checked with
``SO_PEERCRED`` (the credentials of the process that connected) before anything is read from it.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
WARN_INTERVAL = 10.0  # seconds between two log lines about refused peers (a local user may retry in a loop)


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a unix socket, as the kernel saw it at connect."""
    return _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


class PeerCheck:
    """Allows uid 0 and the uid this process runs as; logs refusals, at most one line per WARN_INTERVAL."""

    def __init__(self) -> None:
        self.allowed = frozenset({0, os.getuid()})
        self._lock = threading.Lock()
        self._last_warning = -WARN_INTERVAL
        self._unreported = 0

    def allows(self, conn: socket.socket) -> bool:
        try:
            pid, uid, _gid = peer_credentials(conn)
        except OSError:
            return False
        if uid in self.allowed:
            return True
        with self._lock:
            self._unreported += 1
            now = time.monotonic()
            if now - self._last_warning >= WARN_INTERVAL:
                log.warning(
                    "refused a connection from process %d (uid %d): only root and uid %d may use the replicator%s",
                    pid,
                    uid,
                    os.getuid(),
                    f" ({self._unreported - 1} more refused since the last report)" if self._unreported > 1 else "",
                )
                self._last_warning, self._unreported = now, 0
        return False
