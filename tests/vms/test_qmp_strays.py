"""Stray QMP replies: a reply meant for a monitor's previous client must not break the next one.

QEMU's monitor serves one client at a time; a client that hangs up with commands in flight can
leave their replies to be written to whoever connects next, even ahead of the greeting (seen as
"Did not understand Greeting" in a move-disk task). A scripted monitor replays exactly that.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from pathlib import Path

import pytest
from django.test import override_settings

from vms.qemu import qmp
from vms.status import qmp_batch

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}


class ScriptedMonitor:
    """A unix-socket QMP server; ``strays[n]`` is written to connection ``n`` before anything else."""

    def __init__(self, path: Path, strays: list[list[dict]]) -> None:
        self.path, self.strays, self.connections = path, strays, 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            index, self.connections = self.connections, self.connections + 1
            threading.Thread(target=self._converse, args=(conn, index), daemon=True).start()

    def _converse(self, conn: socket.socket, index: int) -> None:
        with conn, contextlib.suppress(OSError):
            stray = self.strays[index] if index < len(self.strays) else []
            self._send(conn, *stray, GREETING)
            decoder, buffered = json.JSONDecoder(), ""
            while chunk := conn.recv(65536):
                buffered += chunk.decode()
                while buffered.strip():  # QMP is a JSON stream: clients need not end a command with a newline
                    try:
                        request, end = decoder.raw_decode(buffered.lstrip())
                    except ValueError:
                        break
                    buffered = buffered.lstrip()[end:]
                    answer: dict = {"return": {}}
                    if request["execute"] == "query-status":
                        answer = {"return": {"status": "running", "running": True}}
                    elif request["execute"] == "query-blockstats":
                        answer = {"return": [{"stats": {"rd_bytes": 5, "wr_bytes": 7}}]}
                    elif request["execute"] == "query-balloon":
                        answer = {"return": {"actual": 1024}}
                    if "id" in request:
                        answer["id"] = request["id"]
                    # a stray from another client between the answers, as a late reply would be
                    self._send(conn, {"return": {"status": "paused"}, "id": "someone-else"}, answer)

    @staticmethod
    def _send(conn: socket.socket, *messages: dict) -> None:
        conn.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in messages))

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def run_dir(tmp_path):
    with override_settings(PVE_RUN_DIR=tmp_path):
        yield tmp_path / "qemu-server"


def test_a_reply_ahead_of_the_greeting_is_retried_not_fatal(run_dir):
    run_dir.mkdir(mode=0o700)
    monitor = ScriptedMonitor(run_dir / "4242.qmp", strays=[[{"return": {}, "id": "pvestatd-1-3"}]])
    try:
        assert qmp.status(4242, timeout=5) == "running"
        assert monitor.connections == 2  # the garbled handshake was dropped and the call made again
    finally:
        monitor.close()


def test_a_monitor_that_never_greets_properly_still_fails_with_the_reason(run_dir):
    run_dir.mkdir(mode=0o700)
    stray = [{"return": {}}]
    monitor = ScriptedMonitor(run_dir / "4243.qmp", strays=[stray] * 10)
    try:
        with pytest.raises(qmp.QMPCommandError, match=r"unable to connect to VM 4243 qmp socket - .*Greeting"):
            qmp.status(4243, timeout=5)
        assert monitor.connections == qmp.HANDSHAKE_ATTEMPTS
    finally:
        monitor.close()


def test_a_missing_socket_is_not_retried(run_dir):
    run_dir.mkdir(mode=0o700)
    with pytest.raises(qmp.QMPCommandError, match="unable to connect to VM 4244 qmp socket"):
        qmp.status(4244, timeout=2)


def test_the_collector_takes_only_its_own_replies(run_dir):
    run_dir.mkdir(mode=0o700)
    earlier = {"return": {"status": "prelaunch"}, "id": "pvestatd-0000-1"}  # an earlier round's late reply
    monitor = ScriptedMonitor(run_dir / "4245.qmp", strays=[[earlier]])
    try:
        answers = qmp_batch.query_all({4245: run_dir / "4245.qmp"}, timeout=5)
        assert answers == {4245: {"qmpstatus": "running", "diskread": 5, "diskwrite": 7, "balloon": 1024}}
    finally:
        monitor.close()
