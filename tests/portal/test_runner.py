"""The node runner: supervision logic with tiny children, TLS policy, and a whole node end to end."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from cluster import keys
from portal.runner.supervisor import ChildSpec, Supervisor
from portal.runner.web import server_ssl_context
from tests.harness import REPO, node_environment

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
CRASHER = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]


def test_supervisor_restarts_a_dead_child(tmp_path):
    marker = tmp_path / "starts"
    flaky = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x'); import time; time.sleep(0.2)"]
    supervisor = Supervisor(
        [ChildSpec("flaky", flaky), ChildSpec("steady", SLEEPER)], tmp_path, max_restarts=5, window=60
    )
    supervisor.start()
    try:
        steady_pid = supervisor.children[1].process.pid
        deadline = time.monotonic() + 10

        def starts() -> int:
            return len(marker.read_text()) if marker.exists() else 0

        while starts() < 3 and time.monotonic() < deadline:
            supervisor.watch_once()
            time.sleep(0.1)
        assert starts() >= 3
        assert supervisor.children[1].process.pid == steady_pid  # the healthy child was left alone
    finally:
        supervisor.stop()
    assert not supervisor.children[1].alive()


def test_supervisor_gives_up_naming_the_child_and_its_output(tmp_path):
    supervisor = Supervisor(
        [ChildSpec("steady", SLEEPER), ChildSpec("crasher", CRASHER)], tmp_path, max_restarts=2, window=60
    )
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run(poll=0.05)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(signal, "signal", lambda *a: None)  # run() installs handlers only in the main thread
        thread.start()
        thread.join(timeout=30)
    assert result == [1]
    assert not supervisor.children[0].alive()
    assert "boom" in (tmp_path / "crasher.log").read_text()


def test_child_that_never_gets_ready_is_reported(tmp_path):
    supervisor = Supervisor([ChildSpec("lazy", SLEEPER, ready=lambda: False, ready_timeout=0.5)], tmp_path)
    with pytest.raises(Exception, match="lazy not ready after"):
        supervisor.start()
    supervisor.stop()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    now = datetime.now(UTC)
    ca_cert, ca_key = keys.generate_ca("tls-test", now=now, key_bits=2048)
    cert, key = keys.issue_node_certificate(ca_cert, ca_key, "tlsnode", ["127.0.0.1"], now=now)
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    return tmp_path / "cert.pem", tmp_path / "key.pem"


@pytest.mark.parametrize(
    ("version", "accepted"),
    [(ssl.TLSVersion.TLSv1_1, False), (ssl.TLSVersion.TLSv1_2, True), (ssl.TLSVersion.TLSv1_3, True)],
)
def test_web_tls_policy(tmp_path, version, accepted):
    server_context = server_ssl_context(*_self_signed(tmp_path))
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    client_context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    client_context.maximum_version = version
    client_context.set_ciphers("ALL:@SECLEVEL=0")
    left, right = socket.socketpair()
    outcome: list[object] = []

    def serve() -> None:
        try:
            with server_context.wrap_socket(right, server_side=True) as tls:
                outcome.append(tls.version())
        except (ssl.SSLError, OSError) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_context.wrap_socket(left) as tls:
            negotiated = tls.version()
    except (ssl.SSLError, OSError):
        negotiated = None
    thread.join(timeout=10)
    if accepted:
        assert negotiated == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    else:
        assert negotiated is None and isinstance(outcome[0], Exception)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_runnode_serves_admin_login_over_https_and_stops_cleanly(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        **node_environment(tmp_path / "node", node="runnode1"),
        "PVE_HTTPS_PORT": str(port),
        "PVE_LOG_LEVEL": "INFO",
    }
    env.pop("REDIS_URL", None)
    (tmp_path / "node").mkdir()
    output = open(tmp_path / "runnode.out", "wb")  # noqa: SIM115
    runner = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "runnode"],
        env=env,
        cwd=REPO,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ca = tmp_path / "node" / "etc" / "pve" / "pve-root-ca.pem"
    children: list[int] = []
    base = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        page = None
        while time.monotonic() < deadline and runner.poll() is None:
            try:
                page = requests.get(f"{base}/admin/login/", verify=str(ca), timeout=5)
                break
            except (requests.RequestException, OSError):  # OSError: the CA file is not rendered yet
                time.sleep(0.5)
        assert page is not None, (tmp_path / "runnode.out").read_text()[-3000:]
        assert page.status_code == 200 and 'name="password"' in page.text

        session = requests.Session()
        session.verify = str(ca)
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override session.verify
        form = session.get(f"{base}/admin/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
        wrong = session.post(
            f"{base}/admin/login/",
            data={"csrfmiddlewaretoken": token, "username": "root@pam", "password": "nope"},
            headers={"Referer": f"{base}/admin/login/"},
        )
        assert wrong.status_code == 401 and "PVEAuthCookie" not in session.cookies
        done = session.post(
            f"{base}/admin/login/",
            data={
                "csrfmiddlewaretoken": token,
                "username": "root@pam",
                "password": "test-root-password",
                "next": "/admin/",
            },
            headers={"Referer": f"{base}/admin/login/"},
        )
        assert done.status_code == 200 and "Datacenter" in done.text
        assert session.cookies["PVEAuthCookie"].startswith("PVE%3Aroot%40pam%3A")
        assert "static/admin/css/base.css" in done.text
        assert session.get(f"{base}/static/admin/css/base.css").status_code == 200
        api = session.get(f"{base}/api2/json/version")
        assert api.status_code == 200 and api.json()["data"]["release"]
        worker_log = tmp_path / "node" / "log" / "worker.log"
        deadline = time.monotonic() + 90
        while "ready." not in worker_log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "ready." in worker_log.read_text(errors="replace")  # the Celery worker reached the private redis
        children = [
            int(pid)
            for pid in subprocess.run(["pgrep", "-P", str(runner.pid)], capture_output=True, text=True).stdout.split()
        ]
        assert len(children) == 5  # redis, replicator, web, worker, beat
    finally:
        runner.send_signal(signal.SIGTERM)
        try:
            code = runner.wait(timeout=60)
        finally:
            output.close()
    assert code == 0, (tmp_path / "runnode.out").read_text()[-3000:]
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []
    for name in ("replicator", "web", "worker", "redis"):
        assert (tmp_path / "node" / "log" / f"{name}.log").stat().st_size > 0
