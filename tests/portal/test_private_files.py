"""A real node's files are private: data directory 0700, databases, logs, task logs, sockets 0600.

The node starts from a data directory an older release left readable (0755, a 0644 log) and
without ``PVE_ROOT_PASSWORD``, its output on a terminal (a pty): the generated root password is
shown there once and kept in a 0600 file, and no other file of the node holds it, nor the
password of a join started through the API.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.portal.test_runnode import REPO, _free_port, _node_env

NODE = "testnode"


class Terminal:
    """A pty the node runner writes to; everything it shows is collected."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.shown = bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.shown.extend(chunk)

    def text(self) -> str:
        return self.shown.decode(errors="replace")


def allowed_mode(data: Path, path: Path) -> int:
    """The widest mode a node file may have. Public on purpose, as in Proxmox: the config tree outside
    ``priv/`` (directories 0755, files 0640: root:www-data there, the node user's group here) and the
    root SSH public key; everything else is for the node's user only."""
    relative = path.relative_to(data).parts
    if not relative:
        return 0o700
    if relative[:2] == ("etc", "pve") and "priv" not in relative:
        return 0o755 if path.is_dir() else 0o640
    if relative[0] == "ssh" and path.name.endswith(".pub"):
        return 0o644
    return 0o700 if path.is_dir() else 0o600


def modes_too_open(data: Path, paths: list[Path]) -> dict[str, str]:
    """The paths whose mode grants more than :func:`allowed_mode`, with their modes."""
    found = {}
    for path in paths:
        with contextlib.suppress(FileNotFoundError):  # a temporary file gone meanwhile
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & ~allowed_mode(data, path):
                found[str(path.relative_to(data)) or "."] = f"{mode:04o}"
    return found


def node_files(data: Path) -> list[Path]:
    return sorted(p for p in data.rglob("*") if not p.is_symlink())


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def process_command_lines() -> list[bytes]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found.append((entry / "cmdline").read_bytes())
    return found


@pytest.mark.slow
def test_a_node_keeps_its_files_private_and_passwords_out_of_its_logs(tmp_path):
    data = tmp_path / "node"
    (data / "log").mkdir(parents=True)
    data.chmod(0o755)  # as an older release left it
    old_log = data / "log" / "replicator.log"
    old_log.write_text("a line from before\n")
    old_log.chmod(0o644)
    port = _free_port()
    env = _node_env(data, port)
    del env["PVE_ROOT_PASSWORD"]  # the root password is generated
    ca = data / "etc" / "pve" / "pve-root-ca.pem"
    base = f"https://127.0.0.1:{port}/api2/json"
    terminal = Terminal()
    runner = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "runnode"],
        env=env,
        cwd=REPO,
        stdout=terminal.slave,
        stderr=terminal.slave,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.close(terminal.slave)
    join_password = "join-" + secrets.token_hex(12)
    try:
        shown = wait_for(
            lambda: re.search(r"generated password for root@pam: (\S+) \(also in (\S+);", terminal.text()),
            180,
            f"the generated password on the terminal:\n{terminal.text()[-3000:]}",
        )
        password, password_file = shown.group(1), Path(shown.group(2))

        def login() -> dict | None:
            if runner.poll() is not None:
                raise AssertionError(f"runnode exited with {runner.returncode}:\n{terminal.text()[-3000:]}")
            if not ca.exists():
                return None
            try:
                answer = requests.post(
                    f"{base}/access/ticket", data={"username": "root@pam", "password": password}, verify=str(ca)
                )
            except requests.RequestException:
                return None
            assert answer.status_code == 200, answer.text
            return answer.json()["data"]

        ticket = wait_for(login, 180, "a login with the generated password")
        session = requests.Session()
        session.cookies.set("PVEAuthCookie", ticket["ticket"])
        session.headers["CSRFPreventionToken"] = ticket["CSRFPreventionToken"]
        # A task log written by the web process, and one by the worker: a join that fails at once
        # (nothing answers with that fingerprint) after its password went through the broker.
        assert session.post(f"{base}/nodes/{NODE}/qemu", data={"vmid": 100}, verify=str(ca)).status_code == 200
        join = session.post(
            f"{base}/cluster/config/join",
            data={"hostname": "127.0.0.1", "fingerprint": ":".join(["AB"] * 32), "password": join_password},
            verify=str(ca),
        )
        assert join.status_code == 200, join.text
        upid = join.json()["data"]

        def join_ended() -> dict | None:
            status = session.get(f"{base}/nodes/{NODE}/tasks/{upid}/status", verify=str(ca)).json()["data"]
            return status if status["status"] == "stopped" else None

        ended = wait_for(join_ended, 120, "the join task to end")
        assert ended["exitstatus"] != "OK"
        wait_for((data / "celerybeat-schedule.dat").exists, 60, "beat's schedule file")
        assert not [line for line in process_command_lines() if join_password.encode() in line]
        sockets = [data / "redis.sock", data / "replicator.sock"]
        assert all(path.is_socket() for path in sockets)
        too_open = modes_too_open(data, [data, *node_files(data)])  # while it runs: sockets included
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGTERM)
        code = runner.wait(timeout=120)
        os.close(terminal.master)
    assert code == 0, terminal.text()[-3000:]

    assert terminal.text().count(password) == 1  # shown once, on the terminal
    assert password_file == data / "initial-root-password" and password_file.read_text().strip() == password
    files = node_files(data)
    assert {data / "cluster.db", data / "local.db", data / "secret_key", data / "log" / "web.log"} <= set(files)
    assert list((data / "tasks").rglob("UPID:*")), "no task log was written"
    assert too_open == {}
    assert modes_too_open(data, [data, *files]) == {}
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert old_log.read_text().startswith("a line from before\n")  # fixed in place, not replaced
    holding = [
        str(path.relative_to(data))
        for path in files
        if path.is_file() and path != password_file and password.encode() in path.read_bytes()
    ]
    assert holding == []
    assert [str(p.relative_to(data)) for p in files if p.is_file() and join_password.encode() in p.read_bytes()] == []
    replicator_log = (data / "log" / "replicator.log").read_text()
    assert f"generated a password for root@pam: it is in {password_file}" in replicator_log
