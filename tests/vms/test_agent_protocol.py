"""The QGA client's handshake against a scripted agent socket (pure protocol logic; the real
agent is exercised in test_agent.py), and the guest builder's module ordering."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.guest.image import installed_kernel, module_load_order
from vms import runtime_paths
from vms.qemu import agent

VMID = 7590


@pytest.fixture
def fake_qemu() -> Iterator[None]:
    """A live process whose command line names the VM's pid file, so ``vm_pid`` sees a running VM."""
    pid_file = runtime_paths.vm_file(VMID, "pid")
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", "-pidfile", str(pid_file)], stdin=subprocess.PIPE
    )
    pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + 30
    while b"-pidfile" not in Path(f"/proc/{process.pid}/cmdline").read_bytes():  # until the child has exec'd
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield
    process.kill()
    process.wait()
    pid_file.unlink(missing_ok=True)


def serve(script: Callable[[socket.socket, list[dict]], None]) -> tuple[threading.Thread, list[dict]]:
    """Listen on the VM's qga socket and run ``script`` on the one connection; requests are recorded."""
    path = runtime_paths.vm_file(VMID, "qga")
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    seen: list[dict] = []

    def run() -> None:
        connection, _ = server.accept()
        with connection, server:
            script(connection, seen)
        path.unlink(missing_ok=True)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, seen


def read_request(connection: socket.socket, buffer: list[bytes]) -> dict:
    """The next JSON request (a leading 0xFF dropped), reading as much as needed."""
    while True:
        data = b"".join(buffer).lstrip(b"\xff")
        try:
            request, end = json.JSONDecoder().raw_decode(data.decode())
        except ValueError:
            buffer.append(connection.recv(4096))
            continue
        buffer[:] = [data[len(data.decode()[:end].encode()) :]]
        return request


def test_stale_answers_before_the_sync_are_skipped(fake_qemu):
    def script(connection: socket.socket, seen: list[dict]) -> None:
        buffer: list[bytes] = []
        sync = read_request(connection, buffer)
        seen.append(sync)
        sync_id = sync["arguments"]["id"]
        # What a previous client left: a late answer, a stray delimiter with a wrong id, a parse error.
        connection.sendall(b'{"return": {"late": 1}}\n\xff{"return": 12345}\n{"error": {"desc": "junk"}}\n')
        connection.sendall(b"\xff" + json.dumps({"return": sync_id}).encode() + b"\n")
        seen.append(read_request(connection, buffer))
        connection.sendall(b'{"return": {"version": "7.2"}}\n')

    thread, seen = serve(script)
    assert agent.command(VMID, "guest-info") == {"version": "7.2"}
    thread.join(10)
    assert seen[0]["execute"] == "guest-sync-delimited" and seen[1] == {"execute": "guest-info", "arguments": {}}


def test_an_agent_error_and_a_silent_agent(fake_qemu):
    def error_script(connection: socket.socket, seen: list[dict]) -> None:
        buffer: list[bytes] = []
        sync_id = read_request(connection, buffer)["arguments"]["id"]
        connection.sendall(b"\xff" + json.dumps({"return": sync_id}).encode() + b"\n")
        read_request(connection, buffer)
        connection.sendall(b'{"error": {"class": "GenericError", "desc": "no such file"}}\n')

    thread, _ = serve(error_script)
    with pytest.raises(agent.AgentCommandError, match="Agent error: no such file"):
        agent.checked(VMID, "guest-file-open", {"path": "/x"}, "can't open file")
    thread.join(10)

    def silent_script(connection: socket.socket, seen: list[dict]) -> None:
        connection.recv(4096)  # reads the sync, never answers; the client gives up and closes
        connection.recv(4096)

    thread, _ = serve(silent_script)
    with pytest.raises(agent.AgentNotRunning, match="QEMU guest agent is not running"):
        agent.command(VMID, "guest-ping", timeout=0.5)
    thread.join(10)


def test_no_qemu_is_vm_not_running(fake_qemu):
    assert runtime_paths.vm_pid(VMID) is not None  # the fake's command line names VMID's pid file
    pid_file = runtime_paths.vm_file(VMID + 1, "pid")
    pid_file.write_text(str(os.getpid()))  # a live process, but not this VM's QEMU (a reused pid)
    try:
        assert runtime_paths.vm_pid(VMID + 1) is None
        with pytest.raises(agent.VMNotRunning, match=f"VM {VMID + 1} is not running"):
            agent.command(VMID + 1, "guest-ping")
    finally:
        pid_file.unlink()


def test_modules_come_after_their_dependencies():
    order = module_load_order(installed_kernel())
    names = [path.rsplit("/", 1)[-1] for path in order]
    assert names.index("virtio.ko") < names.index("virtio_pci.ko")
    assert names.index("virtio_ring.ko") < names.index("virtio_console.ko")
    assert names.index("failover.ko") < names.index("net_failover.ko") < names.index("virtio_net.ko")
    assert len(names) == len(set(names))
