"""SSH to another node with paramiko: host keys verified (known hosts, a given fingerprint, or the operator).

Never ``AutoAddPolicy``: an unknown host key is accepted only when its fingerprint equals the one
the operator gave (``--ssh-fingerprint``) or the operator confirms it when shown; a key that
differs from the known-hosts entry is refused outright (possible man in the middle).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from cluster.keys.ssh_keys import fingerprint

CONNECT_TIMEOUT = 10.0


class SSHError(Exception):
    """A connection, authentication or host-key failure, with a message for the operator."""


Confirm = Callable[[str, str], bool]


def _key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


class _VerifyPolicy(paramiko.MissingHostKeyPolicy):
    """Accept an unknown host key only if it has the expected fingerprint or the operator confirms it."""

    def __init__(self, expected: str | None, confirm: Confirm | None) -> None:
        self.expected = expected
        self.confirm = confirm
        self.accepted: str | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        shown = fingerprint(_key_line(key))
        if self.expected is not None:
            if shown != self.expected:
                raise SSHError(
                    f"host key of {hostname} has fingerprint {shown}, not the expected {self.expected}; refusing to connect"
                )
        elif self.confirm is None or not self.confirm(hostname, shown):
            raise SSHError(f"host key of {hostname} ({key.get_name()} {shown}) was not confirmed; refusing to connect")
        self.accepted = _key_line(key)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Dialogue:
    """A remote process read and written line by line; ``finish`` collects the rest and the exit code."""

    def __init__(self, host: str, stdin: Any, stdout: Any, stderr: Any) -> None:
        self.host, self.stdin, self.stdout, self.stderr = host, stdin, stdout, stderr

    def readline(self) -> str:
        try:
            return self.stdout.readline()
        except (OSError, paramiko.SSHException) as exc:
            raise SSHError(f"command on {self.host} failed: {exc}") from None

    def send(self, line: str) -> None:
        self.stdin.write(line + "\n")
        self.stdin.flush()

    def finish(self) -> Result:
        try:
            self.stdin.channel.shutdown_write()
            out = self.stdout.read().decode(errors="replace")
            err = self.stderr.read().decode(errors="replace")
            code = self.stdout.channel.recv_exit_status()
        except (OSError, paramiko.SSHException) as exc:
            raise SSHError(f"command on {self.host} failed: {exc}") from None
        return Result(code, out, err)


class Connection:
    """An open SSH session to one node; ``run`` executes an argv there."""

    def __init__(self, client: paramiko.SSHClient, host: str, host_key: str) -> None:
        self.client = client
        self.host = host
        self.host_key = host_key

    def run(self, argv: list[str], *, input: str | None = None, timeout: float = 120) -> Result:
        dialogue = self.dialogue(argv, timeout=timeout)
        if input is not None:
            dialogue.stdin.write(input)
        return dialogue.finish()

    def dialogue(self, argv: list[str], *, timeout: float = 120) -> Dialogue:
        """Start ``argv`` and talk to it line by line (one remote process for a question and its answer)."""
        try:
            stdin, stdout, stderr = self.client.exec_command(shlex.join(argv), timeout=timeout)
        except (OSError, paramiko.SSHException) as exc:
            raise SSHError(f"command on {self.host} failed: {exc}") from None
        return Dialogue(self.host, stdin, stdout, stderr)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    host: str,
    *,
    port: int = 22,
    user: str = "root",
    password: str | None = None,
    key_file: Path | None = None,
    known_hosts: Path | None = None,
    expected_fingerprint: str | None = None,
    confirm: Confirm | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> Connection:
    """Open a verified session, with ``password`` or the private key ``key_file``."""
    client = paramiko.SSHClient()
    if known_hosts is not None and known_hosts.exists():
        try:
            client.load_host_keys(str(known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise SSHError(f"cannot read known hosts {known_hosts}: {exc}") from None
    policy = _VerifyPolicy(expected_fingerprint, confirm)
    client.set_missing_host_key_policy(policy)
    try:
        client.connect(
            host,
            port=port,
            username=user,
            password=password,
            key_filename=str(key_file) if key_file is not None and password is None else None,
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise SSHError(
            f"host key of {host} changed (now {fingerprint(_key_line(exc.key))}, known "
            f"{fingerprint(_key_line(exc.expected_key))}): possible man-in-the-middle attack; refusing to connect"
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise SSHError(f"authentication as {user}@{host} failed (wrong password or key not authorized)") from None
    except SSHError:
        client.close()
        raise
    except TimeoutError:
        client.close()
        raise SSHError(f"cannot reach {host}:{port}: timed out after {timeout:.0f} s") from None
    except (OSError, paramiko.SSHException) as exc:
        client.close()
        raise SSHError(f"cannot connect to {host}:{port}: {exc}") from None
    transport = client.get_transport()
    remote_key = transport.get_remote_server_key() if transport is not None else None
    return Connection(client, host, policy.accepted or (_key_line(remote_key) if remote_key else ""))


def remember_host_key(known_hosts: Path, host: str, key_line: str) -> None:
    """Add ``host``'s verified key to a known-hosts file (as ssh does after the operator said yes)."""
    try:
        lines = known_hosts.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    entry = f"{host} {key_line}"
    if entry in lines:
        return
    known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(known_hosts, "a") as handle:
        handle.write(entry + "\n")


def ask_on_terminal(hostname: str, shown: str) -> bool:
    """The interactive confirmation, as ssh asks it (only on a terminal)."""
    if not sys.stdin.isatty():
        return False
    answer = input(
        f"The authenticity of host '{hostname}' can't be established.\n"
        f"Host key fingerprint is {shown}.\nAre you sure you want to continue connecting (yes/no)? "
    )
    return answer.strip().lower() == "yes"
