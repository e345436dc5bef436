"""Commands on another node of the cluster, over node-to-node SSH (as qemu-server's ``ssh root@<node>``).

As root with this node's key; the other node's host key must be the one the cluster's
``priv/known_hosts`` holds (never asked, never added). A command there is this project's CLI
(``manage.py pvesm import`` ...), run with the same interpreter and checkout path, which every
node of a cluster shares; the node's settings come from ``/etc/default/pve-django`` when it
exists (as the systemd units read them), else from its SSH environment (the lab's sshd sets them
with ``SetEnv``). A volume goes as a stream written to the command's standard input.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from django.conf import settings

from cluster.models import Node
from vms.exceptions import StorageError, VMError

IMPORTED_RE = re.compile(r"successfully imported '([^'\s]+)'")
COMMAND_TIMEOUT = 600.0  # seconds a single read or write of the remote command may take


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def output(self) -> str:
        return (self.stderr.strip() or self.stdout.strip())[-2000:]


class NodeShell(Protocol):
    """A session on another node: ``run`` one argv there, ``stdin`` streamed to it chunk by chunk."""

    node: str

    def run(self, argv: list[str], *, stdin: Iterable[bytes] = ()) -> Result: ...

    def close(self) -> None: ...


class SshShell:
    """A ``NodeShell`` over ``cluster.keys.ssh`` (paramiko): one connection, one channel a command."""

    def __init__(self, node: str, address: str) -> None:
        from cluster.keys import ssh, ssh_keys

        self.node = node
        self._errors = ssh.SSHError
        try:
            self.connection = ssh.connect(
                address,
                port=settings.PVE_SSH_PORT,
                key_file=ssh_keys.root_key_path(),
                known_hosts=ssh_keys.known_hosts_path(),
            )
        except ssh.SSHError as exc:
            raise VMError(f"unable to reach node '{node}' over SSH: {exc}") from None

    def run(self, argv: list[str], *, stdin: Iterable[bytes] = ()) -> Result:
        try:
            dialogue = self.connection.dialogue(argv, timeout=COMMAND_TIMEOUT)
            try:
                for chunk in stdin:
                    dialogue.stdin.write(chunk)
                dialogue.stdin.flush()
                dialogue.stdin.channel.shutdown_write()
            except OSError:
                pass  # the command ended before reading all its input: its exit code and output say why
            out = dialogue.stdout.read().decode(errors="replace")
            err = dialogue.stderr.read().decode(errors="replace")
            return Result(dialogue.stdout.channel.recv_exit_status(), out, err)
        except (self._errors, OSError) as exc:
            raise VMError(f"command on node '{self.node}' failed: {exc}") from None

    def close(self) -> None:
        self.connection.close()


Connector = Callable[[str], NodeShell]


def ssh_shell(node: str) -> NodeShell:
    row = Node.objects.filter(name=node).first()
    if row is None or not row.address:
        raise VMError(f"no address known for node '{node}'")
    return SshShell(node, row.address)


_connector: Connector = ssh_shell


def set_connector(connector: Connector | None) -> None:
    """Reach other nodes through ``connector`` (tests: an in-process stand-in); None: SSH again."""
    global _connector
    _connector = connector or ssh_shell


def connect(node: str) -> NodeShell:
    """A session on ``node``, checked with ``/bin/true`` as qemu-server checks its ssh."""
    shell = _connector(node)
    result = shell.run(["/bin/true"])
    if result.returncode != 0:
        shell.close()
        raise VMError(f"Can't connect to destination address using public key ({node}): {result.output()}")
    return shell


class LazyShell:
    """A ``NodeShell`` that connects (checked as :func:`connect`) at its first command: a live migration asks
    the target's API and needs node SSH only for streamed disks and when that API cannot be reached."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._shell: NodeShell | None = None

    def _connected(self) -> NodeShell:
        if self._shell is None:
            self._shell = connect(self.node)
        return self._shell

    def run(self, argv: list[str], *, stdin: Iterable[bytes] = ()) -> Result:
        return self._connected().run(argv, stdin=stdin)

    def close(self) -> None:
        if self._shell is not None:
            self._shell.close()
            self._shell = None


ENVIRONMENT_FILE = "/etc/default/pve-django"  # the units' settings (contrib/pve-django.default)
# An SSH session has none of the units' settings: read them as the units do, when the file is there.
WITH_SETTINGS = f'if [ -r {ENVIRONMENT_FILE} ]; then set -a; . {ENVIRONMENT_FILE}; set +a; fi; exec "$@"'


def manage_argv(*args: str) -> list[str]:
    """This project's CLI on another node: the same interpreter and checkout as here, with the node's settings."""
    return ["sh", "-c", WITH_SETTINGS, "sh", sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args]


def import_volume(shell: NodeShell, volid: str, stream_format: str, chunks: Iterable[bytes]) -> str:
    """``pvesm import <volid> <format> - --allow-rename 1`` there, fed ``chunks``; the volume id it made."""
    argv = manage_argv("pvesm", "import", volid, stream_format, "-", "--allow-rename", "1")
    result = shell.run(argv, stdin=chunks)
    found = IMPORTED_RE.search(result.stdout)
    if result.returncode != 0 or found is None:
        raise StorageError(f"import of '{volid}' on node '{shell.node}' failed: {result.output()}")
    return found.group(1)


def free_volume(shell: NodeShell, volid: str) -> None:
    """``pvesm free <volid>`` there."""
    result = shell.run(manage_argv("pvesm", "free", volid))
    if result.returncode != 0:
        raise StorageError(f"unable to free '{volid}' on node '{shell.node}': {result.output()}")
