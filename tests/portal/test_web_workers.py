"""The web server with several worker processes (``PVE_WEB_WORKERS``), as pveproxy runs: every
worker serves the one HTTPS socket with the hardened TLS context, and none outlives its parent."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import child_pids, is_zombie
from tests.webserver import WebServer

pytestmark = [pytest.mark.usefixtures("replicator")]
WORKERS = 2


def workers_of(pid: int) -> set[int]:
    """The serving children: those holding a listening TCP socket (not multiprocessing's helpers)."""
    result = set()
    for child in child_pids(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            result.add(child)
    return result


@pytest.fixture(scope="module")
def web(node_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    server = WebServer({**node_env, "PVE_WEB_WORKERS": str(WORKERS)}, tmp_path_factory.mktemp("web") / "web.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_the_workers_serve_the_node_certificate(web):
    assert web.process is not None
    wait_for(lambda: len(workers_of(web.process.pid)) == WORKERS, 60, "the workers did not start")
    for _ in range(10):
        status, _headers, body = web.request("GET", "/api2/json/version")
        assert status == 401 and json.loads(body)["data"] is None
    tls12 = web.context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    raw = socket.create_connection((web.address, web.port), timeout=10)
    with tls12.wrap_socket(raw, server_hostname=web.address) as wrapped:
        assert wrapped.version() == "TLSv1.2"  # the node certificate, verified against the cluster CA


def test_a_dead_worker_is_replaced_and_workers_end_with_the_parent(web):
    assert web.process is not None
    parent = web.process.pid
    wait_for(lambda: len(workers_of(parent)) == WORKERS, 60, "the workers did not start")
    first = workers_of(parent)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(workers_of(parent) - {victim}) == WORKERS, 60, "the dead worker was not replaced")
    assert web.request("GET", "/api2/json/version")[0] == 401
    survivors = workers_of(parent)
    os.kill(parent, signal.SIGKILL)  # the supervisor goes without a word to its workers
    web.process.wait(timeout=10)
    for pid in survivors:
        wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists() or is_zombie(pid), 20, f"worker {pid} outlived it")
    wait_for(lambda: _port_free(web.address, web.port), 20, "the port is still held")


def _port_free(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.connect((address, port))
        except OSError:
            return True
        return False
