"""The corosync transport: CPG for agreed order, votequorum for the right to write.

One thread owns the corosync connections and dispatches their callbacks; everything delivered
(change sets, membership changes, sync messages) goes to the replicator's event sink in
delivery order. The node fails closed: it may write only while connected, quorate, a member
of the group, and while its own messages come back within the token timeout.

Wire format, first byte the kind: ``C`` origin NUL change set; ``S`` a sync message (see
``replicator.sync``); ``V`` volatile node status (``replicator.volatile``); ``A`` an apply acknowledgement (version, hash; see ``replicator.acks``); ``H`` a heartbeat that
only measures the round trip.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from replicator.acks import AckTracker, VoteView, view_from
from replicator.corosync import CorosyncError
from replicator.corosync.cmap import Cmap
from replicator.corosync.cpg import CpgGroup, Member
from replicator.corosync.errors import CS_ERR_LIBRARY
from replicator.corosync.quorum import Votequorum
from replicator.exceptions import NotQuorateError, ReplicatorUnavailableError
from replicator.transport import Sink, Transport, TransportStatus
from replicator.volatile import StatusBoard

log = logging.getLogger(__name__)
# Longer than a QDevice's default sync_timeout (30 s), during which corosync refuses sends.
SYNC_SEND_TIMEOUT = 40.0

HEARTBEAT_INTERVAL = 0.5
QUORUM_REFRESH_INTERVAL = 0.2  # a node's votes raised by a config reload change the quorum silently
RECONNECT_DELAY = 1.0
MemberId = tuple[int, int]


class CorosyncTransport(Transport):
    """CPG group membership and agreed multicast for one replicator process."""

    def __init__(self, node_name: str, group: str, *, poll_interval: float = 0.1) -> None:
        self.node_name = node_name
        self.group_name = group
        self.poll_interval = poll_interval
        self.pid = os.getpid()
        self.nodeid = 0
        self.token_timeout = 1.0
        self.cluster_name = ""
        self.config_version = 0
        self.members: list[MemberId] = []
        self._sink: Sink | None = None
        self._cpg: CpgGroup | None = None
        self._quorum: Votequorum | None = None
        self._cmap: Cmap | None = None
        self._quorate = False
        self._quorum_nodes: list[int] = []  # node ids votequorum counts as members (a QDevice not included)
        self._votes: VoteView | None = None  # None until votequorum's figures are known: confirms nothing
        self._configured: tuple[int | None, int | None] = (None, None)  # (config_version, nodelist votes)
        self._last_refresh = 0.0
        self.acks = AckTracker()
        self.board: StatusBoard = StatusBoard()
        self._connected = False
        self._stopping = threading.Event()
        self._send_lock = threading.Lock()
        self._inflight: collections.deque[float] = collections.deque()
        self._inflight_lock = threading.Lock()
        self._last_sent = 0.0
        self._thread: threading.Thread | None = None
        self.last_error = ""

    # --- Transport interface -----------------------------------------------------------

    def start(self, sink: Sink) -> None:
        self._sink = sink
        self._thread = threading.Thread(target=self._run, name="corosync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def quorate(self) -> bool:
        return self._connected and self._quorate and self.member() and not self.stalled() and self.confirmable()

    def confirmable(self) -> bool:
        """The members running a replicator hold the votes a write needs (else no write could be confirmed)."""
        view = self._votes
        return view is not None and view.holding(self._member_nodeids()) >= view.needed

    def _member_nodeids(self) -> set[int]:
        return {nodeid for nodeid, _ in self.members}

    def member(self) -> bool:
        return (self.nodeid, self.pid) in self.members

    def stalled(self) -> bool:
        """Own messages not delivered within the token timeout: this node cannot reach agreement."""
        with self._inflight_lock:
            return bool(self._inflight) and time.monotonic() - self._inflight[0] > self.token_timeout

    def submit(self, payload: bytes) -> None:
        if not self.quorate():
            raise NotQuorateError()
        self._send(b"C" + self.node_name.encode() + b"\0" + payload)

    def send_sync(self, message: bytes) -> None:
        """Multicast a sync message (allowed without quorum: sync runs in every partition).

        Corosync refuses sends (TRY_AGAIN) until its own sync after a membership change ends;
        with a QDevice that sync waits for the device's vote, for seconds (up to its 30 s
        sync_timeout), so a round's first message waits that long rather than failing.
        """
        self._send(b"S" + message, timeout=SYNC_SEND_TIMEOUT)

    def send_ack(self, version: int, head: str, *, broadcast: bool = True) -> None:
        self.acks.ack(self.nodeid, version, head)
        if not broadcast:
            return
        with contextlib.suppress(NotQuorateError, ReplicatorUnavailableError):
            self._send(b"A" + struct.pack(">Q", version) + head.encode())

    def send_status(self, message: bytes) -> None:
        with contextlib.suppress(NotQuorateError, ReplicatorUnavailableError):
            self._send(b"V" + message)

    def vote_view(self) -> VoteView | None:
        """votequorum's figures and each member's votes, as last read (see ``replicator.acks``)."""
        return self._votes

    def describe(self) -> TransportStatus:
        return {
            "transport": "corosync",
            "cluster_name": self.cluster_name,
            "config_version": self.config_version,
            "connected": self._connected,
            "quorate": self.quorate(),
            "corosync_quorate": self._quorate,
            "stalled": self.stalled(),
            "nodeid": self.nodeid,
            "members": sorted({nodeid for nodeid, _ in self.members}),
            "token_timeout_ms": int(self.token_timeout * 1000),
            "member": self.member(),
            "votes": self._describe_votes(),
            "error": self.last_error,
        }

    def _describe_votes(self) -> dict[str, Any] | None:
        """What a write needs to be confirmed, in votes, and what the members running a replicator hold."""
        view = self._votes
        if view is None:
            return None
        members = self._member_nodeids()
        return {
            "expected": view.expected,
            "quorum": view.quorum,
            "needed": view.needed,
            "held": view.holding(members),
            "members": {str(nodeid): view.nodes.get(nodeid) for nodeid in sorted(members)},
        }

    # --- sending -------------------------------------------------------------------------

    def _send(self, message: bytes, *, timeout: float | None = None) -> None:
        cpg = self._cpg
        if cpg is None or not self._connected:
            raise NotQuorateError("cluster not ready - no connection to corosync")
        with self._send_lock:
            with self._inflight_lock:
                self._inflight.append(time.monotonic())
            try:
                cpg.mcast(message, timeout=timeout if timeout is not None else max(self.token_timeout, 1.0))
            except CorosyncError as exc:
                with self._inflight_lock:
                    if self._inflight:
                        self._inflight.pop()
                raise ReplicatorUnavailableError(f"corosync multicast failed: {exc}") from exc
            self._last_sent = time.monotonic()

    # --- the corosync thread -------------------------------------------------------------

    def _emit(self, event: tuple[Any, ...]) -> None:
        if self._sink is not None:
            self._sink(event)

    def _on_deliver(self, nodeid: int, pid: int, message: bytes) -> None:
        if (nodeid, pid) == (self.nodeid, self.pid):
            with self._inflight_lock:
                if self._inflight:
                    self._inflight.popleft()
        kind, body = message[:1], message[1:]
        if kind == b"C":
            origin, _, payload = body.partition(b"\0")
            self._emit(("C", origin.decode(errors="replace"), payload))
        elif kind == b"A":
            (version,) = struct.unpack(">Q", body[:8])
            self.acks.ack(nodeid, version, body[8:].decode())
        elif kind == b"S":
            self._emit(("S", (nodeid, pid), body))
        elif kind == b"V":
            try:
                self.board.update(body)
            except (ValueError, KeyError, TypeError):
                log.warning("malformed status message from node %d", nodeid)

    def _on_confchg(self, members: list[Member], left: list[Member], joined: list[Member]) -> None:
        self.members = sorted((m.nodeid, m.pid) for m in members)
        self._refresh_quorum()  # the votes of a node that just joined the group
        self.acks.forget_except({nodeid for nodeid, _ in self.members})
        self.board.members({nodeid for nodeid, _ in self.members})
        log.info(
            "CPG membership: %s (left %s, joined %s)",
            self.members,
            [(m.nodeid, m.pid) for m in left],
            [(m.nodeid, m.pid) for m in joined],
        )
        self._emit(("confchg", list(self.members), (self.nodeid, self.pid)))

    def _on_quorum(self, quorate: bool, nodes: list[int]) -> None:
        self._quorum_nodes = list(nodes)
        self._refresh_quorum()
        if quorate != self._quorate:
            log.warning("node is %s", "quorate" if quorate else "NOT quorate - configuration is read-only")
        self._quorate = quorate

    def _on_expected(self, _expected: int) -> None:
        self._refresh_quorum()

    def _refresh_quorum(self) -> None:
        """votequorum's figures and each member's votes now, read together (one consistent view).

        They change without a quorum notification when a reload changes votes (a joined node's
        vote counted). A failed read leaves no view: unknown votes confirm no write.
        """
        self._last_refresh = time.monotonic()
        quorum = self._quorum
        if quorum is None:
            self._votes = None
            return
        try:
            local = quorum.info()
            nodes: dict[int, int] = {}
            for nodeid in {local.node_id, *self._quorum_nodes, *self._member_nodeids()}:
                votes = quorum.node_votes(nodeid)
                if votes is not None:
                    nodes[nodeid] = votes
            configured = self._nodelist_votes()
        except CorosyncError as exc:
            if self._votes is not None:
                log.warning("cannot read the votes from votequorum (%s): no write is confirmed until it answers", exc)
            self._votes = None
            return
        self._votes = view_from(local, nodes, configured)

    def _nodelist_votes(self) -> int | None:
        """The votes the nodelist configures, read again when corosync.conf's config_version changes."""
        if self._cmap is None:
            return None
        version = self._cmap.get_uint("totem.config_version")
        if version != self._configured[0] or self._configured[1] is None:
            self._configured = (version, self._cmap.nodelist_votes())
        return self._configured[1]

    def _connect(self) -> None:
        cmap = self._cmap = Cmap()  # kept open: the nodelist's votes are read again after a reload
        token = cmap.get_uint("runtime.config.totem.token") or cmap.get_uint("totem.token") or 1000
        self.cluster_name = cmap.get_string("totem.cluster_name") or ""
        self.config_version = cmap.get_uint("totem.config_version") or 0
        self._configured = (None, None)
        self.token_timeout = token / 1000.0
        self._quorum = Votequorum(on_quorum=self._on_quorum, on_expected=self._on_expected)
        self._quorum.track()
        self._quorum.dispatch()
        self._cpg = CpgGroup(self.group_name, on_deliver=self._on_deliver, on_confchg=self._on_confchg)
        self.nodeid = self._cpg.local_nodeid()
        with self._inflight_lock:
            self._inflight.clear()
        self._connected = True
        self.last_error = ""
        log.info("connected to corosync as node id %d (token timeout %d ms)", self.nodeid, token)

    def _disconnect(self, reason: str) -> None:
        was = self._connected
        self._connected = False
        self._quorate = False
        self._quorum_nodes = []
        self._votes = None
        self.members = []
        self.board.members(set())
        self.last_error = reason
        for handle in (self._cpg, self._quorum, self._cmap):
            if handle is not None:
                with contextlib.suppress(Exception):
                    handle.close()
        self._cpg = self._quorum = self._cmap = None
        if was:
            log.error("lost corosync (%s): configuration is read-only", reason)
            self._emit(("lost",))

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._connect()
                self._loop()
            except CorosyncError as exc:
                self._disconnect(str(exc))
                self._stopping.wait(RECONNECT_DELAY)
            except Exception as exc:  # keep the thread alive; fail closed
                log.exception("corosync transport error")
                self._disconnect(repr(exc))
                self._stopping.wait(RECONNECT_DELAY)
        self._disconnect("stopped")

    def _loop(self) -> None:
        cpg, quorum = self._cpg, self._quorum
        assert cpg is not None and quorum is not None
        poller = select.poll()
        fds: dict[int, Callable[[], None]] = {cpg.fileno(): cpg.dispatch, quorum.fileno(): quorum.dispatch}
        for fd in fds:
            poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        while not self._stopping.is_set():
            for fd, events in poller.poll(self.poll_interval * 1000):
                if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    raise CorosyncError("poll of the corosync connection", CS_ERR_LIBRARY)
                fds[fd]()
            if time.monotonic() - self._last_refresh >= QUORUM_REFRESH_INTERVAL:
                self._refresh_quorum()
            self._heartbeat()

    def _heartbeat(self) -> None:
        """Keep a message in flight when idle, so a stalled ring is noticed within the token timeout."""
        if not self.member() or time.monotonic() - self._last_sent < HEARTBEAT_INTERVAL:
            return
        with self._inflight_lock:
            if self._inflight:
                return
        with contextlib.suppress(NotQuorateError, ReplicatorUnavailableError):
            self._send(b"H")
