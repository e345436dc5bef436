"""The one client of the replicator's unix socket: submit change sets, ask for status, refresh instances.

Django processes keep one connection per thread to this node's replicator (``request``,
``submit_ops``); tools that talk to another node's replicator, or to this one before Django's
settings name it (the node runner, the lab, tests, benches), open one per request with
``request_at``, ``status_at`` and ``accepts``. Every call has an explicit timeout.

Outside a transaction each ``save()``/``delete()`` is one change set. Inside
``transaction.atomic(using="cluster")`` ops are buffered and submitted together when the
outermost block commits (ops of a rolled-back savepoint are dropped), so a block is
all-or-nothing; an error is raised from the block's exit.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.db import connections
from django.db.models import Model

from replicator import changeset, protocol
from replicator.exceptions import (
    ERRORS_BY_CODE,
    ReplicationError,
    ReplicatorUnavailableError,
)

CLUSTER = "cluster"
_local = threading.local()


def _forget_after_fork() -> None:
    """A forked child (a Celery prefork process) must not share its parent's socket: start afresh."""
    global _local
    _local = threading.local()


os.register_at_fork(after_in_child=_forget_after_fork)


def connect(path: Path | str, *, timeout: float) -> socket.socket:
    """A unix socket connected to the replicator at ``path``; ``timeout`` bounds the connect and each later call."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
    except BaseException:
        sock.close()
        raise
    return sock


def request_at(
    path: Path | str, message: dict[str, Any], *, timeout: float, payload: bytes | None = None
) -> dict[str, Any]:
    """One request on a connection of its own to the replicator at ``path``; its answer as sent (``ok`` false too).

    Raises ``OSError`` (nothing listens, timeout) or ``protocol.ProtocolError`` (a garbled answer).
    """
    with connect(path, timeout=timeout) as sock:
        protocol.send_message(sock, message, payload)
        return protocol.recv_message(sock)


def status_at(path: Path | str, *, timeout: float) -> dict[str, Any] | None:
    """The status of the replicator at ``path``, or None when none answers there."""
    try:
        return request_at(path, {"op": "status"}, timeout=timeout)
    except (OSError, protocol.ProtocolError):
        return None


def accepts(path: Path | str, *, timeout: float) -> bool:
    """Whether a replicator listens at ``path`` (a socket file left by a dead one does not count)."""
    try:
        with connect(path, timeout=timeout):
            return True
    except OSError:
        return False


class _Connection:
    """One persistent socket per thread; requests on it are strictly sequential."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None

    def request(self, message: dict[str, Any], *, timeout: float, payload: bytes | None = None) -> dict[str, Any]:
        sent = False
        try:
            if self.sock is not None and _peer_closed(self.sock):
                self.close()
            if self.sock is None:
                self.sock = connect(settings.PVE_REPLICATOR_SOCKET, timeout=timeout)
            self.sock.settimeout(timeout)
            sent = True
            protocol.send_message(self.sock, message, payload)
            return protocol.recv_message(self.sock)
        except (OSError, protocol.ProtocolError) as exc:
            self.close()
            detail = f"{settings.PVE_REPLICATOR_SOCKET}: {exc}"
            if sent:
                raise ReplicatorUnavailableError(
                    "no answer from this node's replicator; the change may or may not have been applied - "
                    "reload before retrying",
                    detail=detail,
                ) from None
            raise ReplicatorUnavailableError("this node's replicator is not reachable", detail=detail) from None

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


def _peer_closed(sock: socket.socket) -> bool:
    """A kept-alive socket whose replicator went away (restart): reconnect instead of sending."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _connection() -> _Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = _Connection()
    return conn


def request(message: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
    """Send a request to the replicator and return its answer, raising its error."""
    answer = _connection().request(message, timeout=timeout or settings.PVE_REPLICATOR_TIMEOUT)
    return _check(answer)


def _check(answer: dict[str, Any]) -> dict[str, Any]:
    if answer.get("ok"):
        return answer
    error_class = ERRORS_BY_CODE.get(str(answer.get("code")), ReplicationError)
    raise error_class(str(answer.get("error", "replicator error")))


def status() -> dict[str, Any]:
    """Version, hash, quorum and mirror progress of the local replicator."""
    return request({"op": "status"})


def send_changeset(ops: list[changeset.Op]) -> dict[str, Any]:
    """Submit ops as one change set; returns the replicator's answer (``version``)."""
    cs = changeset.new_changeset(ops)
    data = changeset.encode(cs)
    answer = _connection().request(
        {"op": "submit", "id": cs["id"]}, payload=data, timeout=settings.PVE_REPLICATOR_TIMEOUT
    )
    return _check(answer)


def _refresh(instances: list[Model], ops: list[changeset.Op], version: int) -> None:
    for instance, op in zip(instances, ops, strict=True):
        if op["o"] == "delete":
            instance.pk = None
            instance._state.adding = True
        else:
            cast(changeset.Versioned, instance).version = version
            instance._state.adding = False
            instance._state.db = CLUSTER


class _Keep:
    """on_commit marker of one buffered op: dropped by Django if its savepoint rolls back."""

    def __init__(self, pending: _Pending, op: changeset.Op, instance: Model) -> None:
        self.pending, self.op, self.instance = pending, op, instance

    def __call__(self) -> None:
        self.pending.confirmed.append((self.op, self.instance))


class _Pending:
    """Ops buffered by the current thread's outermost cluster transaction.

    Called as the block's last on_commit hook: by then the ``_Keep`` markers that survived
    savepoint rollbacks have filed their ops in ``confirmed``; they go out as one change set.
    """

    def __init__(self) -> None:
        self.confirmed: list[tuple[changeset.Op, Model]] = []

    def __call__(self) -> None:
        _local.pending = None
        items = self.confirmed
        if not items:
            return
        ops = [op for op, _ in items]
        answer = send_changeset(ops)
        _refresh([instance for _, instance in items], ops, int(answer["version"]))


def submit_ops(ops: list[changeset.Op], instances: list[Model]) -> None:
    """Submit now, or buffer into the current ``atomic(using="cluster")`` block."""
    db = connections[CLUSTER]
    if not db.in_atomic_block:
        answer = send_changeset(ops)
        _refresh(instances, ops, int(answer["version"]))
        return
    pending = getattr(_local, "pending", None)
    if pending is None or not any(entry[1] is pending for entry in db.run_on_commit):
        pending = _local.pending = _Pending()  # a new outermost block (or the last one rolled back)
    for op, instance in zip(ops, instances, strict=True):
        db.on_commit(_Keep(pending, op, instance))
    # Keep the flush last and outside every savepoint (empty savepoint set) so it survives partial rollbacks.
    db.run_on_commit = [entry for entry in db.run_on_commit if entry[1] is not pending]
    db.run_on_commit.append((set(), pending, False))  # type: ignore[arg-type]  # django-stubs: entries are (sids, func, robust)


def wait_mirror(version: int, timeout: float = 10.0) -> None:
    """Block until the config tree mirror has rendered ``version`` (for tests and tools)."""
    request(
        {"op": "wait_mirror", "version": version, "timeout": timeout},
        timeout=timeout + 5,
    )
