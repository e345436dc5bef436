"""The live migration's command channel: ``qm mtunnel`` on the target and its source-side client.

The serving loop with the resume replaced (the real resume is exercised by the online migration
lab tests), the CLI verb over real standard input, and the client against a scripted peer:
``tunnel online`` first, ``OK`` or the target's reason, a peer that ends or says something else.
"""

from __future__ import annotations

import io
import subprocess
import sys
from unittest import mock

import pytest

from tests.harness import REPO
from vms.exceptions import VMError
from vms.qemu import incoming, mtunnel
from vms.services.migration import remote


def test_serve_answers_each_command_and_ends_at_quit():
    resumed: list[int] = []

    def resume(vmid: int, *, log) -> None:  # type: ignore[no-untyped-def]
        if vmid == 101:
            raise VMError("VM 101 not running")
        resumed.append(vmid)

    answers: list[str] = []
    lines = [
        "bogus\n",
        "resume 12\n",
        "resume 100; rm -rf /\n",
        "resume 100\n",
        "resume 101\n",
        "quit\n",
        "resume 102\n",
    ]
    with mock.patch.object(incoming, "resume_incoming", resume):
        mtunnel.serve(lines, answers.append)
    assert answers == [
        "tunnel online",
        "ERR: unknown command 'bogus'",
        "ERR: unknown command 'resume 12'",
        "ERR: unknown command 'resume 100; rm -rf /'",
        "OK",
        "ERR: resume failed - VM 101 not running",
        "OK",
    ]
    assert resumed == [100]  # nothing after quit


def test_serve_ends_with_its_input():
    answers: list[str] = []
    mtunnel.serve([], answers.append)
    assert answers == ["tunnel online"]


def test_the_cli_verb_speaks_the_protocol(node_env):
    done = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "qm", "mtunnel"],
        input="nonsense\nquit\n",
        env=node_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["tunnel online", "ERR: unknown command 'nonsense'", "OK"]


class Peer:
    """A scripted ``qm mtunnel``: its lines, and what it was sent."""

    def __init__(self, *lines: str) -> None:
        self.lines = io.StringIO("".join(line + "\n" for line in lines))
        self.sent: list[str] = []

    def readline(self) -> str:
        return self.lines.readline()

    def send(self, line: str) -> None:
        self.sent.append(line)


class Shell:
    node = "far"

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.started: list[list[str]] = []

    def dialogue(self, argv: list[str], *, timeout: float) -> Peer:
        self.started.append(argv)
        return self.peer


def test_the_client_waits_for_online_then_for_ok():
    shell = Shell(Peer("tunnel online", "OK", "ERR: resume failed - VM 100 not running"))
    tunnel = remote.CommandTunnel(shell)  # type: ignore[arg-type]
    assert shell.started == [remote.manage_argv("qm", "mtunnel")]
    tunnel.command("resume 100")
    with pytest.raises(VMError) as refused:
        tunnel.command("resume 100")
    assert str(refused.value) == "resume failed - VM 100 not running"
    assert shell.peer.sent == ["resume 100", "resume 100"]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((), "no migration tunnel on node 'far': it ended"),
        (("Traceback (most recent call last):",), "no migration tunnel on node 'far': Traceback"),
        (("tunnel online",), "the migration tunnel on node 'far' ended"),
    ],
)
def test_the_client_fails_clearly_when_the_peer_does_not_answer(lines, message):
    tunnel = remote.CommandTunnel(Shell(Peer(*lines)))  # type: ignore[arg-type]
    with pytest.raises(VMError) as refused:
        tunnel.command("resume 100")
    assert str(refused.value).startswith(message)
