"""The session node's real HTTPS web server (``python -m portal.runner.web``) for tests that need one.

It serves the session node (same databases, same replicator) on a free port, as runnode's web
child would; clients verify it against the node's cluster CA and may pick their source address
on the loopback network (127.0.0.2, ...) to look like different clients.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.harness import REPO


class Headers(list[tuple[str, str]]):
    """A response's headers in order, repeated ones (Set-Cookie) kept."""

    def get(self, name: str, default: str = "") -> str:
        return next((value for key, value in self if key.lower() == name.lower()), default)

    def cookies(self) -> dict[str, Any]:
        """The cookies set, by name (``http.cookies`` morsels: value, secure, httponly, samesite...)."""
        jar: SimpleCookie = SimpleCookie()
        for key, value in self:
            if key.lower() == "set-cookie":
                jar.load(value)
        return dict(jar.items())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebServer:
    def __init__(self, env: dict[str, str], log_path: Path, address: str = "127.0.0.1") -> None:
        self.env = {**os.environ, **env, "PVE_BIND_ADDRESS": address, "PVE_HTTPS_PORT": str(free_port())}
        self.address = address
        self.port = int(self.env["PVE_HTTPS_PORT"])
        self.log_path = log_path
        self.ca = Path(env["PVE_DATA_DIR"]) / "etc" / "pve" / "pve-root-ca.pem"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "portal.runner.web"],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, self.log_tail()
            try:
                with socket.create_connection((self.address, self.port), timeout=1):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"no web server on port {self.port}: {self.log_tail()}"
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def log_tail(self, size: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-size:] if self.log_path.exists() else "(no log)"

    def threads(self) -> int:
        """The web process's thread count now."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))

    @property
    def base(self) -> str:
        return f"https://{self.address}:{self.port}"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def request(
        self,
        method: str,
        path: str,
        fields: dict[str, str] | None = None,
        *,
        source: str = "127.0.0.1",
        headers: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> tuple[int, Headers, bytes]:
        """One request from ``source`` (a loopback address): status, headers, body."""
        connection = http.client.HTTPSConnection(
            self.address, self.port, context=self.context(), timeout=timeout, source_address=(source, 0)
        )
        body = urlencode(fields) if fields is not None else None
        sent = {**({"Content-Type": "application/x-www-form-urlencoded"} if body else {}), **(headers or {})}
        try:
            connection.request(method, path, body=body, headers=sent)
            answer = connection.getresponse()
            return answer.status, Headers(answer.getheaders()), answer.read()
        finally:
            connection.close()

    def login(self, username: str, password: str, *, source: str = "127.0.0.1") -> tuple[int, Any]:
        status, _headers, body = self.request(
            "POST", "/api2/json/access/ticket", {"username": username, "password": password}, source=source
        )
        return status, json.loads(body)


@contextlib.contextmanager
def serving(env: dict[str, str], directory: Path) -> Iterator[WebServer]:
    """The node's web server started (its log in ``directory``), stopped afterwards."""
    server = WebServer(env, directory / "web.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
