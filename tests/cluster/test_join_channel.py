"""The API join talks only to the pinned certificate: root's password (and so the authkey) never reach another peer.

A real TLS server on loopback plays the cluster node. With a fingerprint that is not its
certificate's, the joining side refuses after the handshake and sends nothing; with the right
one the login request arrives.
"""

from __future__ import annotations

import socket
import ssl
import threading
from datetime import UTC, datetime

import pytest

from cluster.keys import certificates
from cluster.membership import join, join_remote
from tests.cluster.replication import wait_for

ANSWER = b'{"data": {"ticket": "PVE:root@pam:1::x", "CSRFPreventionToken": "1:y"}}'


def _request_length(data: bytes) -> int:
    """Headers plus the Content-Length body of the request begun in ``data``."""
    head, _sep, _body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _colon, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value.strip())
    return len(head) + 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A TLS server that records every byte it receives after the handshake, one connection at a time."""
    directory = tmp_path_factory.mktemp("pinned")
    cert, key = certificates.generate_ca("pinned", now=datetime.now(UTC), key_bits=2048)
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            data = b""
            try:
                with context.wrap_socket(raw, server_side=True) as tls:
                    tls.settimeout(10)
                    while b"\r\n\r\n" not in data or len(data) < _request_length(data):
                        chunk = tls.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if data:  # answered once the whole request is read: closing with unread bytes resets the client
                        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))
            except (OSError, ssl.SSLError):
                pass
            received.append(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], certificates.certificate_fingerprint(cert), received
    done.set()
    listener.close()


def test_a_wrong_fingerprint_gets_nothing_sent(server):
    port, fingerprint, received = server
    wrong = ":".join(["AB"] * 32)
    assert wrong != fingerprint
    peer = join_remote.PinnedHTTPS("127.0.0.1", wrong, port=port)
    with pytest.raises(join.JoinError, match="refusing to send the password"):
        peer.login("root@pam", "the-root-password")
    wait_for(lambda: received, 10, what="the refused connection recorded (once the client closed it)")
    assert received == [b""]  # handshake only: not even the request line
    right = join_remote.PinnedHTTPS("127.0.0.1", fingerprint, port=port)
    right.login("root@pam", "the-root-password")
    assert right.cookie == "PVE:root@pam:1::x"
    wait_for(lambda: len(received) == 2, 10, what="the login request recorded")
    assert received[1].startswith(b"POST /api2/json/access/ticket ")
