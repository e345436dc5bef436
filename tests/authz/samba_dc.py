"""A real Active Directory domain controller (Debian's Samba) in a network namespace, for the AD tests.

The DC gets its own namespace joined to the host by a veth pair (10.214.0.1 there, 10.214.0.254
here), so its LDAP ports never meet the host's. It serves LDAPS with a certificate from the
test's own CA and refuses simple binds without TLS, like a real AD.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

REALM = "CORP.EXAMPLE.ORG"
DOMAIN = "corp.example.org"
ADDRESS = "10.214.0.1"
HOST_ADDRESS = "10.214.0.254"
ADMIN_PASSWORD = "Adm1n-Passw0rd!"
USERS = {"olga": "Olga-Passw0rd!", "pavel": "Pavel-Passw0rd!"}


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


class SambaDC:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        tag = os.getpid() % 100000
        self.namespace = f"pvead{tag}"
        self.host_link, self.peer = f"pad{tag}h", f"pad{tag}n"
        self.ca = directory / "tls" / "ca.pem"
        self.process: subprocess.Popen | None = None

    def samba_tool(self, *args: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", self.namespace, "samba-tool", *args, "-H", str(self.directory / "private/sam.ldb")],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        _ip("netns", "add", self.namespace)
        _ip("-n", self.namespace, "link", "set", "lo", "up")
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", self.peer)
        _ip("link", "set", self.peer, "netns", self.namespace)
        _ip("addr", "add", f"{HOST_ADDRESS}/24", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        _ip("-n", self.namespace, "addr", "add", f"{ADDRESS}/24", "dev", self.peer)
        _ip("-n", self.namespace, "link", "set", self.peer, "up")
        subprocess.run(
            [
                "ip", "netns", "exec", self.namespace, "samba-tool", "domain", "provision",
                f"--realm={REALM}", "--domain=CORP", "--server-role=dc", "--dns-backend=NONE",
                "--use-rfc2307", f"--targetdir={self.directory}", f"--adminpass={ADMIN_PASSWORD}",
                f"--host-ip={ADDRESS}", f"--option=interfaces={ADDRESS}", "--option=bind interfaces only=yes",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        self._tls()
        log = open(self.directory / "samba.log", "wb")  # noqa: SIM115  (owned by the child)
        self.process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.namespace,
                "samba",
                "-s",
                str(self.directory / "etc/smb.conf"),
                "-F",
                "--debug-stdout",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as sock:
                sock.settimeout(1)
                if sock.connect_ex((ADDRESS, 636)) == 0:
                    break
            if self.process.poll() is not None or time.monotonic() > deadline:
                code = self.process.poll()
                raise RuntimeError(f"samba exited ({code}): " + (self.directory / "samba.log").read_text()[-3000:])
            time.sleep(0.2)
        for name, password in USERS.items():
            self.samba_tool(
                "user", "add", name, password, f"--given-name={name.title()}", "--surname=Test",
                f"--mail-address={name}@{DOMAIN}",
            )  # fmt: skip
        self.samba_tool("group", "add", "adops")
        self.samba_tool("group", "addmembers", "adops", "olga")

    def _tls(self) -> None:
        """Serve LDAPS with a certificate for the DC's address from the test's own CA."""
        from cluster.keys import certificates

        now = datetime.now(UTC)
        ca, ca_key = certificates.generate_ca("test-ad", now=now)
        cert, key = certificates.issue_node_certificate(ca, ca_key, "dc", [ADDRESS], now=now)
        tls = self.directory / "tls"
        tls.mkdir()
        self.ca.write_bytes(ca)
        (tls / "cert.pem").write_bytes(cert)
        (tls / "key.pem").write_bytes(key)
        (tls / "key.pem").chmod(0o600)
        conf = self.directory / "etc/smb.conf"
        (self.directory / "run").mkdir(exist_ok=True)
        settings = (
            f"\tpid directory = {self.directory}/run\n"
            f"\ttls enabled = yes\n\ttls keyfile = {tls}/key.pem\n\ttls certfile = {tls}/cert.pem\n"
            f"\ttls cafile = {tls}/ca.pem\n"
        )
        conf.write_text(conf.read_text().replace("[global]\n", "[global]\n" + settings, 1))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        pids = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _ip("link", "del", self.host_link, check=False)
        _ip("netns", "del", self.namespace, check=False)
