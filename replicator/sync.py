"""The coordinator: applies the agreed stream, and runs a sync round after every membership change.

The pmxcfs dfsm model. CPG gives virtual synchrony: every member sees a configuration change
at the same point of the stream, so every member starts the round together. The round:

1. every member multicasts its state: version, history hash, oldest retained change log entry;
2. once all states are in, every member multicasts its own history hash at each version the
   others announced (when still retained), so prefixes can be compared;
3. every member computes the same plan from the same messages: the winning history is the one
   most members hold or are a prefix of (so the quorate side wins over a forced minority), then
   the highest version; its lowest member sends the change log entries the others lack, or a
   full snapshot in bounded chunks to those it cannot serve by delta, then an end marker;
4. members whose history is not proven a prefix of the winner's (forked, or older than its
   retained change log) keep their state as a dated file before taking the snapshot
   (``replicator.divergence``).

Change sets delivered during a round wait and are applied after it. If the membership changes
again before the round ends, every member drops the same waiting change sets and their
writers get an error: nothing acknowledged is lost, and nothing is applied on some nodes only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import connections

from replicator import acks, divergence, snapshot
from replicator.applier import MAX_BATCH, Applier
from replicator.exceptions import ReplicationError
from replicator.models import ChangeLogEntry
from replicator.sync_plan import MemberId, MemberState, Plan, make_plan, pack, unpack
from replicator.transport import Transport

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
STOP = ("stop",)


@dataclass
class Round:
    key: str
    members: list[MemberId]
    me: MemberId
    started: float = field(default_factory=time.monotonic)
    states: dict[MemberId, MemberState] = field(default_factory=dict)
    hashes: dict[MemberId, dict[str, str | None]] = field(default_factory=dict)
    plan: Plan | None = None
    rows: list[snapshot.Row] = field(default_factory=list)
    entries: int = 0


class Coordinator:
    """The only thread that applies: change sets in delivery order, sync rounds between them."""

    def __init__(
        self,
        applier: Applier,
        transport: Transport,
        *,
        node: str,
        data_dir: Path,
        render_all: Callable[[int], None],
        cluster_log: Callable[[str, int], None],
        resubmit: Callable[[list[snapshot.Row]], None] = lambda rows: None,
        checksum_interval: float = 600.0,
        clustered: bool = False,
    ) -> None:
        self.applier = applier
        self.transport = transport
        self.node = node
        self.data_dir = data_dir
        self.render_all = render_all
        self.cluster_log = cluster_log
        self.resubmit = resubmit
        self.checksum_interval = checksum_interval
        self.queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.ready = threading.Event()  # in sync: writes may go out
        if not clustered:
            self.ready.set()
        self.round: Round | None = None
        self.members: list[MemberId] = []
        self.member_names: dict[MemberId, str] = {}
        self.me: MemberId | None = None
        self.buffer: list[tuple[str, bytes]] = []
        self.last_sync: dict[str, Any] = {}
        self.divergence: dict[str, Any] | None = None
        self.verification: dict[str, Any] = {}
        self._sums: dict[int, dict[MemberId, tuple[int, str]]] = {}
        self._verify_counter = 0
        self._last_verify = time.monotonic()

    def event(self, event: tuple[Any, ...]) -> None:
        """The transport's sink: queue an event in delivery order (never blocks)."""
        self.queue.put(event)

    def stop(self) -> None:
        self.queue.put(STOP)

    def run(self) -> None:
        pending: tuple[Any, ...] | None = None
        try:
            while True:
                if pending is not None:
                    event, pending = pending, None
                else:
                    try:
                        event = self.queue.get(timeout=1.0)
                    except queue.Empty:
                        self._maybe_verify()
                        continue
                if event is STOP:
                    return
                if event[0] != "C":
                    self._control(event)
                    continue
                batch = [(event[1], event[2])]
                while len(batch) < MAX_BATCH:
                    try:
                        more = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is STOP or more[0] != "C":
                        pending = more
                        break
                    batch.append((more[1], more[2]))
                self._changesets(batch)
        finally:
            connections.close_all()

    # --- change sets ---------------------------------------------------------------------

    def _changesets(self, batch: list[tuple[str, bytes]]) -> None:
        if self.round is not None:
            self.buffer.extend(batch)
            return
        self._apply(batch)

    def _apply(self, batch: list[tuple[str, bytes]], *, replay: bool = False) -> list[dict[str, Any]]:
        before = self.applier.version
        try:
            return self.applier.apply_batch(batch, replay=replay)
        except Exception as exc:  # the applier must outlive any single bad batch
            log.exception("applying a batch failed")
            self.applier.fail([payload for _, payload in batch], "error", f"replicator error: {exc}")
            return []
        finally:
            if self.applier.version != before and self.round is None:
                self.transport.send_ack(self.applier.version, self.applier.hash, broadcast=self._must_ack(batch))

    def _must_ack(self, batch: list[tuple[str, bytes]]) -> bool:
        """Whether this node is one of the peers that acknowledge a change set of the batch.

        An origin needs acknowledgements from peers that hold, with its own, the votes a write
        needs; the designated ones are the next voting members after it in name order, the same
        choice on every node (``acks.designated``). The others stay silent (one CPG message per
        peer and write saved); if a designated peer dies, the sync round after the membership
        change acknowledges for everyone.
        """
        view = self.transport.vote_view()
        names = sorted(set(self.member_names.values()))
        votes = {name: view.nodes.get(member[0]) if view else None for member, name in self.member_names.items()}
        # at least a majority of the members' votes: a need that just grew (a joined node's vote) may not be known here yet
        target = max(view.needed if view else 0, sum(v or 0 for v in votes.values()) // 2 + 1)
        for origin, _payload in batch:
            if origin == self.node:
                continue  # its own writers count its apply directly
            if view is None or origin not in names or self.node not in names:
                return True  # votes or membership not known here yet: acknowledge to be safe
            if self.node in acks.designated(origin, names, votes, target):
                return True
        return False

    def _drop_buffer(self, why: str) -> None:
        if self.buffer:
            log.warning("dropping %d change sets delivered during an interrupted sync", len(self.buffer))
            self.applier.fail([payload for _, payload in self.buffer], "retry", why)
            self.buffer = []

    # --- control events ------------------------------------------------------------------

    def _control(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "confchg":
            try:
                self._start_round(event[1], event[2])
            except ReplicationError:  # this thread must outlive it; the next membership change starts a round
                log.exception("cannot start the sync round for membership %s", event[1])
        elif kind == "lost":
            self.ready.clear()
            self.round = None
            self.members = []
            self._drop_buffer("lost the connection to corosync; the change was not applied")
        elif kind == "S":
            try:
                header, blob = unpack(event[2])
                self._sync_message(tuple(event[1]), header, blob)
            except Exception:
                log.exception("sync message from %s failed", event[1])
        elif kind == "call":  # run a function between applies (no change set is half applied)
            call: Future[Any] = event[2]
            try:
                call.set_result(event[1]())
            except Exception as exc:
                call.set_exception(exc)
        elif kind == "checksum":
            future: Future[dict[str, Any]] = event[1]
            try:
                digest, count = snapshot.checksum()
                future.set_result(
                    {"version": self.applier.version, "hash": self.applier.hash, "checksum": digest, "rows": count}
                )
            except Exception as exc:
                future.set_exception(exc)

    def _send(self, header: dict[str, Any], blob: bytes = b"") -> None:
        self.transport.send_sync(pack(header, blob))

    def _start_round(self, members: list[MemberId], me: MemberId) -> None:
        self.ready.clear()
        self._drop_buffer("cluster membership changed during a sync; the change was not applied, retry")
        # (nodeid, pid) pairs, made tuples again: tuple() of a pair is a pair, which mypy cannot see.
        self.members = [tuple(m) for m in members]  # type: ignore[misc]
        self.me = tuple(me)  # type: ignore[assignment]
        if self.me not in self.members:
            self.round = None
            return
        key = ",".join(f"{n}:{p}" for n, p in self.members)
        self.round = Round(key, self.members, tuple(me))  # type: ignore[arg-type]  # a pair, as above
        self._send(
            {
                "t": "state",
                "key": key,
                "node": self.node,
                "v": self.applier.version,
                "h": self.applier.hash,
                "low": self.applier.oldest_retained(),
            }
        )

    def _sync_message(self, sender: MemberId, header: dict[str, Any], blob: bytes) -> None:
        kind = header.get("t")
        if kind == "verify":
            self._verify(header)
            return
        if kind == "sum":
            self._sum(sender, header)
            return
        current = self.round
        if current is None or header.get("key") != current.key:
            return  # from an earlier configuration
        if kind == "state":
            current.states[sender] = MemberState(header["node"], int(header["v"]), header["h"], int(header["low"]))
            if len(current.states) == len(current.members):
                versions = {s.version for s in current.states.values() if s.version < self.applier.version}
                self._send(
                    {"t": "hashes", "key": current.key, "hashes": {str(v): self.applier.hash_at(v) for v in versions}}
                )
        elif kind == "hashes":
            current.hashes[sender] = header["hashes"]
            if len(current.hashes) == len(current.members):
                self._plan(current)
        elif kind == "delta":
            self._delta(current, header, blob)
        elif kind == "snap":
            if current.plan is not None and current.me in current.plan.snapshot:
                current.rows.extend(header["rows"])
        elif kind == "end":
            self._end(current, header, blob)

    def _plan(self, current: Round) -> None:
        self.member_names = {member: state.node for member, state in current.states.items()}
        plan = current.plan = make_plan(current.states, current.hashes)
        if not plan.delta and not plan.snapshot:
            self._finish(current, "none")
            return
        top = current.states[plan.winner]
        log.info(
            "sync: %s sends version %d (delta to %s, snapshot to %s)",
            current.states[plan.sender].node,
            top.version,
            [current.states[m].node for m in plan.delta],
            [current.states[m].node for m in plan.snapshot],
        )
        if plan.sender == current.me:
            self._send_history(current, plan)

    def _send_history(self, current: Round, plan: Plan) -> None:
        if plan.delta:
            start = min(plan.delta.values())
            for entries, blob in _chunked_entries(start):
                self._send({"t": "delta", "key": current.key, "entries": entries}, blob)
        if plan.snapshot:
            chunk: list[snapshot.Row] = []
            size = 0
            for row in snapshot.rows():
                chunk.append(row)
                size += len(snapshot.encode_row(row))
                if size >= CHUNK_BYTES:
                    self._send({"t": "snap", "key": current.key, "rows": chunk})
                    chunk, size = [], 0
            if chunk:
                self._send({"t": "snap", "key": current.key, "rows": chunk})
        head = ChangeLogEntry.objects.order_by("-version").first()
        assert head is not None, "a history to send has a head entry"
        payload = bytes(head.payload)
        self._send(
            {
                "t": "end",
                "key": current.key,
                "v": self.applier.version,
                "h": self.applier.hash,
                "head": [head.version, head.changeset_id, head.origin, head.hash],
            },
            payload,
        )

    def _delta(self, current: Round, header: dict[str, Any], blob: bytes) -> None:
        if current.plan is None or current.me not in current.plan.delta:
            return
        batch: list[tuple[str, bytes]] = []
        expected: list[tuple[int, str]] = []
        offset = 0
        for version, _cs_id, origin, digest, length in header["entries"]:
            payload = blob[offset : offset + length]
            offset += length
            if version <= self.applier.version + len(batch):
                continue
            if version != self.applier.version + len(batch) + 1:
                raise RuntimeError(f"sync delta skips from {self.applier.version + len(batch)} to {version}")
            batch.append((origin, payload))
            expected.append((version, digest))
        if not batch:
            return
        self._apply(batch, replay=True)
        current.entries += len(batch)
        if (self.applier.version, self.applier.hash) != expected[-1]:
            raise RuntimeError(
                f"replaying the delta gave version {self.applier.version} hash {self.applier.hash[:12]}, "
                f"expected {expected[-1][0]} {expected[-1][1][:12]}"
            )

    def _end(self, current: Round, header: dict[str, Any], blob: bytes) -> None:
        plan = current.plan
        if plan is None:
            return
        kind = "delta" if current.me in plan.delta else "none"
        if current.me in plan.snapshot:
            kind = "snapshot"
            keep = plan.keeps_state(current.me)
            if keep:
                self.divergence = divergence.keep_state(
                    self.data_dir,
                    self.applier.version,
                    self.applier.hash,
                    current.states[plan.winner].node,
                    plan.snapshot[current.me],
                )
            kept = divergence.mergeable_rows() if keep else []
            version, cs_id, origin, digest = header["head"]
            snapshot.install(current.rows, (version, cs_id, origin, digest, blob), self.applier._model_sql)
            lost = divergence.lost_rows(kept, current.rows)
            if lost:
                self.resubmit(lost)
            self.applier.reload_head()
            current.entries = len(current.rows)
            self.render_all(self.applier.version)
            if keep and self.divergence is not None:
                self.cluster_log(divergence.cluster_log_message(self.node, self.divergence), 3)
        if (self.applier.version, self.applier.hash) != (header["v"], header["h"]):
            log.error(
                "after sync at version %d hash %s, expected %d %s: staying read-only",
                self.applier.version,
                self.applier.hash[:12],
                header["v"],
                header["h"][:12],
            )
            self.round = None
            return
        self._finish(current, kind)

    def _finish(self, current: Round, kind: str) -> None:
        self.round = None
        self.last_sync = {
            "kind": kind,
            "seconds": round(time.monotonic() - current.started, 4),
            "entries": current.entries,
            "members": len(current.members),
            "version": self.applier.version,
        }
        if kind != "none":
            log.info("sync done: %s", self.last_sync)
        buffered, self.buffer = self.buffer, []
        self.transport.send_ack(self.applier.version, self.applier.hash, broadcast=True)
        for start in range(0, len(buffered), MAX_BATCH):
            self._apply(buffered[start : start + MAX_BATCH])
        self.ready.set()

    # --- checksum verification -----------------------------------------------------------

    def _maybe_verify(self) -> None:
        if (
            self.round is not None
            or not self.members
            or self.members[0] != self.me
            or time.monotonic() - self._last_verify < self.checksum_interval
        ):
            return
        self._last_verify = time.monotonic()
        self._verify_counter += 1
        self._send({"t": "verify", "n": self._verify_counter, "members": len(self.members)})

    def request_verify(self) -> None:
        """Ask every member to checksum its state at the same point of the stream."""
        self._verify_counter += 1
        self._send({"t": "verify", "n": int(time.time() * 1000), "members": len(self.members)})

    def _verify(self, header: dict[str, Any]) -> None:
        if self.round is not None:
            return  # every member is in the same round: all skip it
        digest, _count = snapshot.checksum()
        self._send({"t": "sum", "n": header["n"], "v": self.applier.version, "sum": digest})

    def _sum(self, sender: MemberId, header: dict[str, Any]) -> None:
        sums = self._sums.setdefault(int(header["n"]), {})
        sums[sender] = (int(header["v"]), header["sum"])
        if len(sums) < len(self.members):
            return
        del self._sums[int(header["n"])]
        distinct = set(sums.values())
        self.verification = {
            "time": int(time.time()),
            "version": next(iter(sums.values()))[0],
            "members": len(sums),
            "agree": len(distinct) == 1,
        }
        if len(distinct) != 1:
            log.error("state checksums differ between members: %s", sums)
            self.cluster_log(f"state checksum mismatch between cluster members at {sorted(distinct)}", 3)
        for stale in [n for n in self._sums if n < int(header["n"]) - 10]:
            del self._sums[stale]


def _chunked_entries(start: int) -> Iterator[tuple[list[list[Any]], bytes]]:
    """Change log entries after ``start``, grouped into messages of about CHUNK_BYTES."""
    entries: list[list[Any]] = []
    blobs: list[bytes] = []
    size = 0
    query = ChangeLogEntry.objects.filter(version__gt=start).order_by("version")
    for entry in query.iterator(chunk_size=1000):
        payload = bytes(entry.payload)
        entries.append([entry.version, entry.changeset_id, entry.origin, entry.hash, len(payload)])
        blobs.append(payload)
        size += len(payload)
        if size >= CHUNK_BYTES:
            yield entries, b"".join(blobs)
            entries, blobs, size = [], [], 0
    if entries:
        yield entries, b"".join(blobs)
