"""Only root and the node's user may talk to a real replicator: the socket's modes, then SO_PEERCRED.

The other user is real: ``nobody``, through ``setpriv``, running the system Python (the project's
virtual environment need not be readable to it).
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from replicator import client
from tests.harness import ReplicatorProcess, manage, node_environment

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c"]
# Connects, waits for what the replicator says without having sent anything, then sends a
# request (a restart, were it served) and reads what comes back.
CLIENT = """
import json, os, socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print(json.dumps({"pid": os.getpid(), "connect": "permission denied"}))
    sys.exit(0)
def frame():
    header = b""
    while len(header) < 4:
        chunk = s.recv(4 - len(header))
        if not chunk:
            return None
        header += chunk
    (size,) = struct.unpack("!I", header)
    body = b""
    while len(body) < size:
        body += s.recv(size - len(body))
    return json.loads(body)
unasked = frame()
request = json.dumps({"op": "restart"}).encode()
try:
    s.sendall(struct.pack("!I", len(request)) + request)
    after = frame()
except OSError as exc:
    after = str(exc)
print(json.dumps({"pid": os.getpid(), "connect": "ok", "unasked": unasked, "after": after}))
"""


def as_nobody(socket_path: Path) -> dict:
    result = subprocess.run([*NOBODY, CLIENT, str(socket_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def node() -> Iterator[tuple[ReplicatorProcess, Path]]:
    """A replicator whose socket sits below a directory every user may traverse (pytest's are root's only)."""
    base = Path(tempfile.mkdtemp(prefix="pve-peer-"))
    base.chmod(0o711)
    data = base / "data"
    env = {**node_environment(data, node="peernode"), "PVE_REPLICATOR_SOCKET": str(base / "run" / "replicator.sock")}
    manage(env, "migrate", "--database", "default", "-v0")
    manage(env, "migrate", "--database", "cluster", "-v0")
    process = ReplicatorProcess(env)
    process.socket_path = base / "run" / "replicator.sock"
    process.start()
    try:
        yield process, base
    finally:
        process.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_another_local_user_is_refused_by_the_socket_modes_and_by_its_credentials(node):
    process, base = node
    socket_path = process.socket_path
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((base / "data").stat().st_mode) == 0o700
    assert as_nobody(socket_path)["connect"] == "permission denied"  # the directory keeps it out
    socket_path.parent.chmod(0o711)
    assert as_nobody(socket_path)["connect"] == "permission denied"  # and so does the socket's own mode

    socket_path.chmod(0o666)  # a mode loosened by hand: now only the peer check stands
    version = client.request_at(socket_path, {"op": "status"}, timeout=60)["version"]
    seen = as_nobody(socket_path)
    assert seen["connect"] == "ok"
    assert seen["unasked"] == {
        "ok": False,
        "code": "error",
        "error": "permission denied: only root and the node's user",
    }  # refused at accept, before the client sent a byte
    assert seen["after"] is None or "Broken pipe" in str(seen["after"]) or "reset" in str(seen["after"])
    status = client.request_at(socket_path, {"op": "status"}, timeout=60)  # root is served, by the same process
    assert status["ok"] and status["version"] == version and process.process.poll() is None
    log = process.log_path.read_text()
    assert f"refused a connection from process {seen['pid']} (uid 65534)" in log
