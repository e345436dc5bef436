"""The SSH forwards of a secure live migration: the target's memory (and NBD) unix sockets reached
through one ``ssh -M`` connection to the target, with the node's key and the cluster's known hosts.

The connection is opened when the migration starts, so its handshake overlaps the target's start;
each forward is then added through the control socket (``ssh -O forward``), one round trip, as
soon as the target has said where it listens. The control socket lives in a private directory
of its own (short: unix socket paths are limited to 108 bytes); its name carries
``<vmid>.migrate-tunnel`` like the forwarded sockets, so a leftover is recognisable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from django.conf import settings

from vms.exceptions import VMError

WAIT = 5.0  # seconds for the connection and for each forward (qemu-server: 100 x 50 ms)


class SshForwards:
    """One SSH connection to ``node`` carrying unix-socket forwards; :meth:`close` ends it and them."""

    def __init__(self, node: str, vmid: int) -> None:
        from cluster.keys import ssh_keys
        from cluster.models import Node

        row = Node.objects.filter(name=node).first()
        if row is None or not row.address:
            raise VMError(f"no address known for node '{node}'")
        self.node = node
        self.directory = tempfile.mkdtemp(prefix="pve-migrate-")  # 0700, root's
        self.control = os.path.join(self.directory, f"{int(vmid)}.migrate-tunnel.ctl")
        self.destination = f"root@{row.address}"
        self.options = ["-i", str(ssh_keys.root_key_path()), "-p", str(settings.PVE_SSH_PORT),
                        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"HostKeyAlias={node}",
                        "-o", f"UserKnownHostsFile={ssh_keys.known_hosts_path()}",
                        "-o", "StreamLocalBindUnlink=yes", "-S", self.control]  # fmt: skip
        self.locals: list[str] = []
        self.process = subprocess.Popen(
            ["ssh", *self.options, "-M", "-N", "-o", "ExitOnForwardFailure=yes", self.destination],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def forward(self, local: str, remote: str) -> None:
        """``local`` (a unix socket here) forwarded to ``remote`` (one there), ready when this returns."""
        deadline = time.monotonic() + WAIT
        while not os.path.exists(self.control):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise VMError(f"no SSH tunnel to node '{self.node}': {self._reason() or 'no connection'}")
            time.sleep(0.01)
        Path(local).unlink(missing_ok=True)
        try:
            done = subprocess.run(
                ["ssh", *self.options, "-O", "forward", "-L", f"{local}:{remote}", self.destination],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=WAIT,
            )
        except subprocess.TimeoutExpired:
            raise VMError(f"no SSH tunnel to node '{self.node}': the forward was not set up in time") from None
        if done.returncode != 0 or not os.path.exists(local):
            raise VMError(f"no SSH tunnel to node '{self.node}': {done.stderr.strip() or 'the socket did not appear'}")
        self.locals.append(local)

    def _reason(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read().strip()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for local in self.locals:
            Path(local).unlink(missing_ok=True)
        shutil.rmtree(self.directory, ignore_errors=True)
