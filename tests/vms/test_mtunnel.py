"""``qm mtunnel``, qemu-server's command channel on a migration target: the serving loop with the
resume replaced, and the CLI verb over real standard input."""

from __future__ import annotations

import subprocess
import sys
from unittest import mock

from tests.harness import REPO
from vms.exceptions import VMError
from vms.qemu import incoming, mtunnel


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
