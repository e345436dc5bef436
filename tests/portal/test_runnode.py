"""A whole node under ``manage.py runnode``: admin login page over HTTPS, TLS policy, clean SIGTERM stop."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent.parent
CHILDREN = ("redis", "replicator", "worker", "beat", "qmeventd", "pvestatd", "web")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_env(data_dir: Path, port: int) -> dict[str, str]:
    """The test process's environment minus the session node's settings, plus a fresh node's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PVE_") and k != "REDIS_URL"}
    env.update(
        {
            "PVE_DATA_DIR": str(data_dir),
            "PVE_NODE_NAME": "testnode",
            "PVE_NODE_ADDRESS": "127.0.0.1",
            "PVE_ROOT_PASSWORD": "test-root-password",
            "PVE_HTTPS_PORT": str(port),
            "PVE_BIND_ADDRESS": "127.0.0.1",
            "PVE_LOG_LEVEL": "INFO",
            "DJANGO_SETTINGS_MODULE": "portal.settings",
        }
    )
    return env


def _tls_version(port: int, version: ssl.TLSVersion) -> str | None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.minimum_version = version
    context.maximum_version = version
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw) as tls,
        ):
            return tls.version()
    except (ssl.SSLError, OSError):
        return None


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1:DeprecationWarning")
def test_runnode_serves_the_admin_over_https_and_stops_cleanly_on_sigterm(tmp_path):
    data = tmp_path / "node"
    port = _free_port()
    env = _node_env(data, port)
    ca = data / "etc" / "pve" / "pve-root-ca.pem"
    logs = data / "log"
    out_path = tmp_path / "runnode.out"

    def output() -> str:
        return out_path.read_text(errors="replace")[-4000:]

    with open(out_path, "wb") as out:
        runner = subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "runnode"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    children: list[int] = []
    base = f"https://127.0.0.1:{port}"
    try:
        page = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and runner.poll() is None:
            if ca.exists():
                try:
                    page = requests.get(f"{base}/admin/login/", verify=str(ca), timeout=5)
                    break
                except requests.RequestException:
                    pass
            time.sleep(0.5)
        assert page is not None, f"no answer from {base} (runner exit code {runner.poll()}):\n{output()}"
        assert page.status_code == 200, page.text[:2000]
        assert 'name="password"' in page.text

        # The admin's CSS is served by the node itself (no collectstatic).
        css = requests.get(f"{base}/static/admin/css/base.css", verify=str(ca), timeout=10)
        assert css.status_code == 200 and "body" in css.text

        # Logging in to the admin issues the cluster ticket as a URI-escaped cookie.
        session = requests.Session()
        form = session.get(f"{base}/admin/login/", verify=str(ca), timeout=10).text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
        login = {"csrfmiddlewaretoken": token, "username": "root@pam", "next": "/admin/"}
        referer = {"Referer": f"{base}/admin/login/"}
        wrong = session.post(
            f"{base}/admin/login/", data={**login, "password": "nope"}, headers=referer, verify=str(ca)
        )
        assert wrong.status_code == 401 and "PVEAuthCookie" not in session.cookies
        done = session.post(
            f"{base}/admin/login/", data={**login, "password": "test-root-password"}, headers=referer, verify=str(ca)
        )
        assert done.status_code == 200 and "Datacenter" in done.text
        assert session.cookies["PVEAuthCookie"].startswith("PVE%3Aroot%40pam%3A")
        assert session.get(f"{base}/api2/json/version", verify=str(ca)).json()["data"]["release"]

        # Error messages reach clients in the status line (proxmoxer shows resp.reason).
        missing = session.get(f"{base}/api2/json/nodes/testnode/qemu/4242/config", verify=str(ca))
        assert missing.status_code == 500
        assert missing.reason == "Configuration file 'nodes/testnode/qemu-server/4242.conf' does not exist"
        assert "X-PVE-Reason" not in missing.headers
        unknown = requests.get(f"{base}/api2/json/no/such/path", verify=str(ca), timeout=10)
        assert (unknown.status_code, unknown.reason) == (501, "Method 'GET /no/such/path' not implemented")

        # The real server: TLS 1.1 refused, TLS 1.2 and 1.3 negotiated.
        assert _tls_version(port, ssl.TLSVersion.TLSv1_1) is None
        assert _tls_version(port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
        assert _tls_version(port, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"

        # The Celery worker reached the private redis and consumes this node's queue.
        deadline = time.monotonic() + 90
        worker_log = logs / "worker.log"
        while time.monotonic() < deadline and not (
            worker_log.exists() and "ready." in worker_log.read_text(errors="replace")
        ):
            time.sleep(0.5)
        worker_text = worker_log.read_text(errors="replace")
        assert "ready." in worker_text, worker_text[-3000:]
        assert "node.testnode" in worker_text

        # What the children printed is the node's syslog and journal, as Proxmox's come from journald.
        syslog = session.get(
            f"{base}/api2/json/nodes/testnode/syslog", params={"service": "worker", "limit": 5000}, verify=str(ca)
        )
        worker_lines = [line["t"] for line in syslog.json()["data"]]
        assert any(" testnode worker[" in t and "ready." in t for t in worker_lines), worker_lines[-20:]
        journal = session.get(
            f"{base}/api2/json/nodes/testnode/journal", params={"lastentries": 3}, verify=str(ca)
        ).json()["data"]
        assert len(journal) == 5 and journal[0].startswith("s=") and journal[-1].startswith("s=")
        assert (logs / "syslog").stat().st_mode & 0o777 == 0o600

        listed = subprocess.run(["pgrep", "-P", str(runner.pid)], capture_output=True, text=True).stdout
        children = [int(pid) for pid in listed.split()]
        assert len(children) == len(CHILDREN), output()
        assert (data / "redis.sock").stat().st_mode & 0o077 == 0  # unixsocketperm 600
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGTERM)
        try:
            code = runner.wait(timeout=90)
        except subprocess.TimeoutExpired:
            for pid in [runner.pid, *children]:  # every child runs in a session of its own
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            runner.wait()
            raise
    assert code == 0, output()
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []
    for name in CHILDREN:
        assert (logs / f"{name}.log").exists(), name
    assert (logs / "web.log").stat().st_size > 0
    assert "[replicator]" in output() and "[web]" in output()  # prefixed copies on the runner's stderr


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _runnode(env: dict[str, str], out: Path) -> subprocess.Popen:
    with open(out, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "runnode"],
            env=env,
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


@pytest.mark.slow
def test_a_second_runnode_is_refused_and_the_children_die_with_a_killed_runner(tmp_path):
    data = tmp_path / "node"
    env = _node_env(data, _free_port())
    first_out, second_out = tmp_path / "first.out", tmp_path / "second.out"
    first = _runnode(env, first_out)
    second: subprocess.Popen | None = None
    processes: list[int] = []
    try:
        deadline = time.monotonic() + 180
        worker_log = data / "log" / "worker.log"
        while not (worker_log.exists() and "ready." in worker_log.read_text(errors="replace")):
            assert first.poll() is None and time.monotonic() < deadline, first_out.read_text()[-3000:]
            time.sleep(0.3)
        while len(subprocess.run(["pgrep", "-P", str(first.pid)], capture_output=True).stdout.split()) < len(CHILDREN):
            assert time.monotonic() < deadline, first_out.read_text()[-3000:]
            time.sleep(0.3)
        processes = _descendants(first.pid)  # the children and their own (Celery's pool, say)
        assert len(processes) > len(CHILDREN)

        second = _runnode(env, second_out)
        assert second.wait(timeout=60) == 1
        refusal = second_out.read_text()
        assert f"{data} is in use by another runnode or the processes it started" in refusal, refusal
        assert "starting redis" not in refusal and "migrating" not in refusal  # refused before anything
        assert first.poll() is None and all(_alive(pid) for pid in processes)  # the first node is untouched

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        deadline = time.monotonic() + 30
        while left := [pid for pid in processes if _alive(pid)]:
            assert time.monotonic() < deadline, f"processes outlived their runner: {left}"
            time.sleep(0.05)
    finally:
        for runner in (first, second):
            if runner is not None and runner.poll() is None:
                os.killpg(runner.pid, signal.SIGKILL)
        for pid in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    third = _runnode(env, tmp_path / "third.out")  # the data directory is free again
    try:
        deadline = time.monotonic() + 180
        while len(subprocess.run(["pgrep", "-P", str(third.pid)], capture_output=True).stdout.split()) < len(CHILDREN):
            assert third.poll() is None and time.monotonic() < deadline, (tmp_path / "third.out").read_text()[-3000:]
            time.sleep(0.3)
    finally:
        third.send_signal(signal.SIGTERM)
        assert third.wait(timeout=90) == 0
