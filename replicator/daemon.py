"""The replicator daemon: socket server, applier thread, mirror thread, transport.

Threads: one per client connection (requests are small and sequential per connection), one
applier (the only writer of the cluster database), one mirror renderer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections

from replicator import bootstrap, changeset, cluster_log, faults, protocol, snapshot, volatile
from replicator.acks import AckTracker
from replicator.applier import Applier, ChangedKeys
from replicator.exceptions import NotQuorateError, ReplicationError
from replicator.membership import describe_membership, make_transport, not_ready_reasons, report_readiness
from replicator.mirror import Mirror
from replicator.peers import PeerCheck
from replicator.state import enter_apply_mode
from replicator.sync import Coordinator
from replicator.transport import RESTART_EXIT_CODE, LocalTransport, Transport

log = logging.getLogger(__name__)


class MirrorThread(threading.Thread):
    """Renders the tree after applies, coalescing bursts; tracks the rendered version.

    Rendering waits for a quiet moment (no apply for ``interval`` seconds, at most ``max_delay``
    after the first pending change), so a stream of writes is rendered in a few batches and the
    file system work does not compete with the commits that acknowledge writes.
    """

    interval = 0.02
    max_delay = 1.0

    def __init__(self, mirror: Mirror) -> None:
        super().__init__(name="mirror", daemon=True)
        self.mirror = mirror
        self.queue: queue.Queue[tuple[int, ChangedKeys | None] | None] = queue.Queue()
        self.version = 0
        self.cond = threading.Condition()

    def notify(self, version: int, changed: ChangedKeys) -> None:
        self.queue.put((version, changed))

    def notify_all(self, version: int) -> None:
        """Re-render the whole tree (after a snapshot replaced the state)."""
        self.queue.put((version, None))

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            version, changed = item
            # Yield to a stream of writes: render once the applier has been quiet for
            # ``interval``, or after ``max_delay`` at the latest.
            deadline = time.monotonic() + self.max_delay
            stop = False
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    more = self.queue.get(timeout=min(self.interval, remaining))
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                version = more[0]
                changed = None if changed is None or more[1] is None else changed | more[1]
            try:
                if changed is None:
                    self.mirror.render_all()
                else:
                    self.mirror.render_changes(changed)
            except Exception:
                log.exception("rendering the config tree failed")
                connections.close_all()
            with self.cond:
                self.version = version
                self.cond.notify_all()
            if stop:
                return

    def wait(self, version: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.version < version:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
        return True


def _refuse(conn: socket.socket) -> None:
    with conn, contextlib.suppress(OSError):
        conn.settimeout(1)
        protocol.send_message(
            conn, {"ok": False, "code": "error", "error": "permission denied: only root and the node's user"}
        )


class Replicator:
    """Wires the transport, applier, mirror and IPC server of one node."""

    def __init__(self, transport: Transport | None = None) -> None:
        enter_apply_mode()
        self.node = settings.PVE_NODE_NAME
        self.socket_path = Path(settings.PVE_REPLICATOR_SOCKET)
        self.transport = transport or make_transport(self.node)
        self.clustered = not isinstance(self.transport, LocalTransport)
        self.mirror = Mirror(Path(settings.PVE_ETC_DIR), self.node)
        self.mirror_thread = MirrorThread(self.mirror)
        self.applier = Applier(retain=settings.PVE_CHANGELOG_RETAIN, on_applied=self.mirror_thread.notify)
        self.coordinator = Coordinator(
            self.applier,
            self.transport,
            node=self.node,
            data_dir=Path(settings.PVE_DATA_DIR),
            render_all=self.mirror_thread.notify_all,
            cluster_log=self.cluster_log,
            resubmit=self.resubmit,
            checksum_interval=settings.PVE_CHECKSUM_INTERVAL,
            clustered=self.clustered,
        )
        self.stopping = threading.Event()
        self.done = threading.Event()
        self.exit_code = 0
        self.bootstrapped = threading.Event()
        self.server: socket.socket | None = None

    # --- write path ----------------------------------------------------------------------

    def submit(self, payload: bytes, changeset_id: str, timeout: float) -> dict[str, Any]:
        """Multicast a change set and wait for this node's own apply of it.

        Waits while a sync round runs (writes pause during sync). A change set dropped because
        the membership changed again mid-sync was applied nowhere, so it is sent again.
        """
        if len(payload) > settings.PVE_MAX_CHANGESET_BYTES:
            return {
                "ok": False,
                "code": "too_large",
                "error": f"change set of {len(payload)} bytes exceeds the limit",
            }
        deadline = time.monotonic() + timeout
        while True:
            result = self._submit_once(payload, changeset_id, deadline)
            if result.get("code") != "retry":
                return result
            if time.monotonic() >= deadline:
                return {**result, "code": "unavailable"}

    def _submit_once(self, payload: bytes, changeset_id: str, deadline: float) -> dict[str, Any]:
        if not self.transport.quorate():
            reasons = self.not_ready()
            error = str(NotQuorateError()) + (f" ({'; '.join(reasons)})" if reasons else "")
            return {"ok": False, "code": "not_quorate", "error": error}
        if not self.coordinator.ready.wait(max(0.0, deadline - time.monotonic())):
            return {"ok": False, "code": "unavailable", "error": "cluster not ready - synchronising state"}
        future = self.applier.expect(changeset_id)
        try:
            faults.crash_point("before_mcast", self.node, payload)
            self.transport.submit(payload)
            faults.crash_point("after_mcast", self.node, payload)
            result = future.result(timeout=max(0.0, deadline - time.monotonic()))
            if result["ok"] and not self._confirmed(result, deadline):
                return {
                    "ok": False,
                    "code": "unavailable",
                    "error": "the change was applied here but not confirmed by nodes holding enough votes "
                    "(the node lost its cluster, or the nodes that hold the votes did not apply it in time); "
                    "its outcome is decided when the cluster is whole again",
                }
            return result
        except ReplicationError as exc:
            return {"ok": False, "code": exc.code, "error": str(exc)}
        except FutureTimeout:
            return {
                "ok": False,
                "code": "unavailable",
                "error": "timed out waiting for the change set to be applied",
            }
        finally:
            self.applier.forget(changeset_id)

    def _confirmed(self, result: dict[str, Any], deadline: float) -> bool:
        """Until the nodes that applied it hold the votes a write needs; this node's own apply counts its votes only."""
        acks: AckTracker | None = getattr(self.transport, "acks", None)
        if acks is None:
            return True
        return acks.wait(result["version"], result["hash"], self.transport.vote_view, self.transport.quorate, deadline)

    def resubmit(self, rows: list[list[Any]]) -> None:
        """Write rows again as new change sets (in the background): merges a diverged node's log."""

        def _write() -> None:
            for start in range(0, len(rows), 200):
                ops = [
                    {"m": label, "k": key, "o": "save", "v": 0, "f": fields}
                    for label, key, _v, fields in rows[start : start + 200]
                ]
                cs = changeset.new_changeset(ops)
                for _attempt in range(30):
                    result = self.submit(changeset.encode(cs), cs["id"], settings.PVE_REPLICATOR_TIMEOUT)
                    if result["ok"] or result.get("code") == "conflict" or self.stopping.is_set():
                        break
                    self.stopping.wait(1.0)
            log.info("merged %d rows of the replaced history back", len(rows))

        threading.Thread(target=_write, name="merge", daemon=True).start()

    def cluster_log(self, message: str, pri: int = 6) -> None:
        """Append to the replicated cluster log from inside the replicator, without blocking the caller."""

        def _write() -> None:
            entry = cluster_log.new_entry(message, node=self.node, pri=pri, tag="replicator")
            if entry is None:
                log.error("no cluster log to write to: %s", message)
                return
            cs = changeset.new_changeset([changeset.save_op(entry)])
            for _attempt in range(30):
                result = self.submit(changeset.encode(cs), cs["id"], settings.PVE_REPLICATOR_TIMEOUT)
                if result["ok"] or self.stopping.is_set():
                    return
                self.stopping.wait(1.0)
            log.error("could not write to the cluster log: %s", message)

        threading.Thread(target=_write, name="cluster-log", daemon=True).start()

    def handle(self, message: dict[str, Any], payload: bytes | None = None) -> dict[str, Any]:
        op = message.get("op")
        if op == "submit":
            cs_id = message.get("id")
            if not isinstance(cs_id, str) or payload is None:
                return {"ok": False, "code": "invalid", "error": "malformed change set"}
            return self.submit(payload, cs_id, settings.PVE_REPLICATOR_TIMEOUT)
        if op == "status":
            return {"ok": True, **self.status()}
        if op == "checksum":
            future: Future[dict[str, Any]] = Future()
            self.coordinator.event(("checksum", future))
            return {"ok": True, **future.result(timeout=float(message.get("timeout", 60)))}
        if op == "cluster_status":
            board = self.transport.board
            return {
                "ok": True,
                "nodes": board.snapshot(message.get("fields")) if board is not None else {},
                **{
                    k: v
                    for k, v in self.status().items()
                    if k in ("quorate", "members", "synced", "cluster_name", "config_version")
                },
            }
        if op == "verify":
            self.coordinator.request_verify()
            return {"ok": True}
        if op == "restart":
            self.request_restart("requested (corosync configuration changed)")
            return {"ok": True}
        if op == "reset_for_join":
            return self.reset_for_join()
        if op == "wait_mirror":
            done = self.mirror_thread.wait(int(message.get("version", 0)), float(message.get("timeout", 10)))
            if not done:
                return {
                    "ok": False,
                    "code": "unavailable",
                    "error": "mirror did not catch up in time",
                }
            return {"ok": True, "mirror_version": self.mirror_thread.version}
        return {"ok": False, "code": "invalid", "error": f"unknown request {op!r}"}

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "clustered": self.clustered,
            "version": self.applier.version,
            "hash": self.applier.hash,
            "quorate": self.transport.quorate(),
            "mirror_version": self.mirror_thread.version,
            **self.transport.describe(),
            "synced": self.coordinator.ready.is_set(),
            "bootstrapped": self.bootstrapped.is_set(),
            "last_sync": self.coordinator.last_sync,
            "divergence": self.coordinator.divergence,
            "verification": self.coordinator.verification,
            "not_ready": self.not_ready(),
            "durability": self.applier.durability,
        }

    def not_ready(self) -> list[str]:
        """Why this cluster member may not write now, in words for the operator (empty when it may)."""
        return not_ready_reasons(self.transport.describe(), synced=self.coordinator.ready.is_set())

    # --- serving -------------------------------------------------------------------------

    def _serve_connection(self, conn: socket.socket) -> None:
        limit = settings.PVE_MAX_CHANGESET_BYTES + 4096
        with conn:
            while not self.stopping.is_set():
                try:
                    message = protocol.recv_message(conn, limit=4096)
                    payload = protocol.recv_raw(conn, limit=limit) if message.get("op") == "submit" else None
                except protocol.ProtocolError as exc:
                    if "closed" not in str(exc):
                        with contextlib.suppress(OSError):
                            protocol.send_message(
                                conn,
                                {"ok": False, "code": "too_large", "error": str(exc)},
                            )
                    return
                except OSError:
                    return
                try:
                    answer = self.handle(message, payload)
                except Exception as exc:
                    log.exception("request failed")
                    answer = {
                        "ok": False,
                        "code": "error",
                        "error": f"replicator error: {exc}",
                    }
                try:
                    protocol.send_message(conn, answer)
                except OSError:
                    return

    def _listen(self) -> socket.socket:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.socket_path.with_name(self.socket_path.name + ".new")
        if tmp.exists():
            tmp.unlink()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(tmp))
        os.chmod(tmp, 0o600)
        server.listen(128)
        os.replace(tmp, self.socket_path)
        return server

    def _accept_loop(self, server: socket.socket) -> None:
        peers = PeerCheck()
        while not self.stopping.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                if self.stopping.is_set():
                    return
                raise
            if not peers.allows(conn):  # before a byte of the request is read
                _refuse(conn)
                continue
            threading.Thread(target=self._serve_connection, args=(conn,), name="client", daemon=True).start()

    def start(self) -> None:
        """Start every thread, bootstrap first-start content, then accept clients."""
        threading.Thread(target=self.coordinator.run, name="applier", daemon=True).start()
        self.transport.start(self.coordinator.event)
        if self.clustered:
            # rendered in the background: a node with a large state joins without waiting for its files
            self.mirror_thread.start()
            self.mirror_thread.notify_all(self.applier.version)
        else:
            self.mirror.render_all()
            self.mirror_thread.version = self.applier.version
            self.mirror_thread.start()
        threading.Thread(target=self._publish_status, name="status", daemon=True).start()
        if self.clustered:
            threading.Thread(target=self._bootstrap_clustered, name="bootstrap", daemon=True).start()
        else:
            self._bootstrap()
        self.server = self._listen()
        threading.Thread(target=self._accept_loop, args=(self.server,), name="accept", daemon=True).start()
        log.info(
            "replicator of node %s ready at version %d on %s",
            self.node,
            self.applier.version,
            self.socket_path,
        )
        log.info("node %s is %s", self.node, describe_membership(clustered=self.clustered))
        if self.clustered:
            args = (self.node, self.not_ready, self.stopping)
            threading.Thread(target=report_readiness, args=args, name="readiness", daemon=True).start()

    def _bootstrap(self) -> None:
        nodeid = self.transport.describe().get("nodeid")
        bootstrap.set_local_nodeid(int(nodeid) if self.clustered and nodeid else None)
        instances = bootstrap.collect(self.node)
        if not instances:
            self.bootstrapped.set()
            return
        ops = [changeset.save_op(instance) for instance in instances]
        cs = changeset.new_changeset(ops)
        result = self.submit(changeset.encode(cs), cs["id"], settings.PVE_REPLICATOR_TIMEOUT)
        if not result["ok"]:
            raise ReplicationError(f"bootstrap change set refused: {result['error']}")
        log.info("bootstrap: created %d objects (version %d)", len(ops), result["version"])
        self.bootstrapped.set()

    def _publish_status(self) -> None:
        """Multicast this node's volatile status every PVE_STATUS_INTERVAL seconds."""
        while not self.stopping.is_set():
            try:
                nodeid = int(self.transport.describe().get("nodeid") or 0)
                message = json.dumps(volatile.collect(self.node, nodeid), default=str).encode()
                self.transport.send_status(message)
            except Exception:
                log.exception("publishing the node status failed")
            finally:
                connections.close_all()
            self.stopping.wait(settings.PVE_STATUS_INTERVAL)

    def _bootstrap_clustered(self) -> None:
        """First-start content once this node is quorate and in sync; retried when another node's won."""
        while not self.stopping.is_set():
            if not (self.transport.quorate() and self.coordinator.ready.is_set()):
                self.stopping.wait(0.2)
                continue
            try:
                self._bootstrap()
                return
            except ReplicationError as exc:
                log.info("bootstrap retried: %s", exc)
            except Exception:
                log.exception("bootstrap failed; retrying")
            finally:
                connections.close_all()
            self.stopping.wait(0.5)

    def request_restart(self, why: str) -> None:
        """Exit with RESTART_EXIT_CODE shortly (after the answer is sent); runnode and systemd start us again.

        How a node switches between standalone and cluster member: the transport is chosen at start.
        """
        log.info("replicator restarting: %s", why)
        self.exit_code = RESTART_EXIT_CODE
        threading.Timer(0.2, self.done.set).start()

    def reset_for_join(self) -> dict[str, Any]:
        """Before joining a cluster: keep the standalone state in a dated file, empty the database, restart.

        The joining node takes the cluster's state whole, as Proxmox's ``finish_join`` does; its
        VMs are carried back in by the join after the sync.
        """
        if self.clustered:
            return {"ok": False, "code": "invalid", "error": "this node is already a cluster member"}
        directory = Path(settings.PVE_DATA_DIR) / "backup"

        def _reset() -> Path:
            path = snapshot.save_diverged(directory, self.applier.version, self.applier.hash, "join")
            snapshot.prune_backups(directory)
            snapshot.wipe()
            self.applier.reload_head()
            return path

        future: Future[Path] = Future()
        self.coordinator.event(("call", _reset, future))
        path = future.result(timeout=300)
        self.request_restart("state emptied to join a cluster")
        return {"ok": True, "backup": str(path)}

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.transport.stop()
        self.coordinator.stop()
        self.mirror_thread.queue.put(None)

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT."""
        done = threading.Event()

        def _stop(signum: int, _frame: object) -> None:
            log.info("replicator stopping (signal %d)", signum)
            done.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        self.done = done
        self.start()
        done.wait()
        self.stop()
