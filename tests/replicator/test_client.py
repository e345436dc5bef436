"""The replicator client's one-shot calls (``request_at``, ``status_at``, ``accepts``): answers, and bounded failures."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from django.conf import settings

from replicator import client, protocol

pytestmark = pytest.mark.usefixtures("replicator")


def test_request_at_answers_as_the_persistent_connection_does():
    answer = client.request_at(settings.PVE_REPLICATOR_SOCKET, {"op": "status"}, timeout=5)
    assert answer["ok"] and answer["version"] == client.status()["version"]
    refused = client.request_at(settings.PVE_REPLICATOR_SOCKET, {"op": "no-such-op"}, timeout=5)
    assert refused["ok"] is False  # the answer as sent: the caller decides
    assert client.status_at(settings.PVE_REPLICATOR_SOCKET, timeout=5)["version"] == answer["version"]
    assert client.accepts(settings.PVE_REPLICATOR_SOCKET, timeout=1)


def test_nothing_listening_is_none_false_or_oserror(tmp_path):
    stale = tmp_path / "replicator.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(stale))  # a socket file whose process is gone
    for path in (stale, tmp_path / "missing.sock"):
        assert client.accepts(path, timeout=1) is False
        assert client.status_at(path, timeout=1) is None
        with pytest.raises(OSError):
            client.request_at(path, {"op": "status"}, timeout=1)


def test_a_replicator_that_never_answers_fails_within_the_timeout(tmp_path):
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(path))
        silent.listen(8)  # connections queue up, none is ever accepted
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            client.request_at(path, {"op": "status"}, timeout=0.3)
        assert client.status_at(path, timeout=0.3) is None
        assert time.monotonic() - started < 3
        assert client.accepts(path, timeout=1)  # it listens, it just does not answer


def test_a_garbled_answer_is_a_protocol_error_or_no_status(tmp_path):
    path = tmp_path / "garbled.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(2)

        def answer_garbled() -> None:
            for _ in range(2):
                peer, _ = server.accept()
                with peer:
                    protocol.recv_message(peer)
                    peer.sendall(protocol.HEADER.pack(2) + b"[]")  # JSON, but not an object

        thread = threading.Thread(target=answer_garbled, daemon=True)
        thread.start()
        with pytest.raises(protocol.ProtocolError):
            client.request_at(path, {"op": "status"}, timeout=5)
        assert client.status_at(path, timeout=5) is None
        thread.join(timeout=5)
