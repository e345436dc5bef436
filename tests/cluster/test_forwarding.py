"""Requests for another node are forwarded over HTTPS: two real nodes, each with its own web server.

Node A is the session's node (``testnode``, 127.0.0.1). Node B (``othernode``, 127.0.0.2) starts
from a copy of A's cluster state (same CA, ticket keys, users and ACLs) and then shares nothing
with A: its own databases, replicator, certificate and web server. A knows B from its node table
only. The ACLs differ on purpose after the copy, so an answer shows which node checked it.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db.models import Max
from django.test import override_settings

from authz import services
from authz.models import ACLEntry, APIToken, User
from authz.permissions import has_privileges
from cluster.keys import certificates
from cluster.models import Node
from portal.tasks.follow import follow_task
from tests.harness import REPO, ReplicatorProcess, node_environment
from vms.models import VM

pytestmark = [pytest.mark.usefixtures("replicator")]
PASSWORD = "forward-password"
B_NODE, B_ADDRESS = "othernode", "127.0.0.2"


@dataclass
class Nodes:
    port: int
    ca: Path
    b_dir: Path
    token: str

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}/api2/json{path}"

    def session(self, userid: str, password: str = PASSWORD) -> tuple[requests.Session, str]:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would replace the cluster CA
        session.verify = str(self.ca)
        answer = session.post(self.url("/access/ticket"), data={"username": userid, "password": password}, timeout=30)
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        session.cookies.set("PVEAuthCookie", data["ticket"])
        return session, data["CSRFPreventionToken"]

    def b_query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with sqlite3.connect(f"file:{self.b_dir / 'cluster.db'}?mode=ro", uri=True, timeout=10) as db:
            return db.execute(sql, args).fetchall()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (the backup API, beside the running replicator)."""
    with sqlite3.connect(source, timeout=30) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def web(env: dict[str, str], address: str, port: int, log: Path) -> subprocess.Popen:
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "portal.runner.web"],
            env={**os.environ, **env, "PVE_BIND_ADDRESS": address, "PVE_HTTPS_PORT": str(port)},
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def wait_listening(address: str, port: int, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"no web server on {address}:{port}: {log.read_text()[-3000:]}")


def add_node(name: str, address: str, fingerprint: str) -> Node:
    nodeid = (Node.objects.aggregate(m=Max("nodeid"))["m"] or 0) + 1
    node = Node(name=name, nodeid=nodeid, address=address, ssl_fingerprint=fingerprint)
    node.save()
    return node


@pytest.fixture(scope="module")
def nodes(node_env: dict[str, str], replicator: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    if node_env.get("PVE_CLUSTER_DATABASE_URL"):
        pytest.fail("the forwarding test copies SQLite databases; run it without PVE_TEST_DATABASE=postgresql")
    root = User.objects.get(userid="root@pam")
    for userid in ("fw-auditor@pve", "fw-nobody@pve"):
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=root, password=PASSWORD)
    services.modify_acl(root, f"/nodes/{B_NODE}", ["PVEAuditor"], users=["fw-auditor@pve"])
    if APIToken.objects.filter(tokenid="fw-auditor@pve!ci").exists():
        services.delete_token("fw-auditor@pve!ci", actor=root)
    _token, secret = services.add_token("fw-auditor@pve", "ci", actor=root, privsep=False)

    a_dir = Path(node_env["PVE_DATA_DIR"])
    b_dir = tmp_path_factory.mktemp("othernode")
    copy_database(a_dir / "cluster.db", b_dir / "cluster.db")
    copy_database(a_dir / "local.db", b_dir / "local.db")
    with sqlite3.connect(b_dir / "local.db") as db:
        db.execute("DELETE FROM cluster_task")  # B's own task index starts empty
    # After the copy: A lets fw-nobody audit node B, B does not.
    services.modify_acl(root, f"/nodes/{B_NODE}", ["PVEAuditor"], users=["fw-nobody@pve"])

    b_env = {**node_environment(b_dir, node=B_NODE), "PVE_NODE_ADDRESS": B_ADDRESS}
    b_replicator = ReplicatorProcess(b_env)
    b_replicator.start()
    port = free_port()
    processes: list[subprocess.Popen] = []
    try:
        b_cert = b_dir / "etc" / "pve" / "nodes" / B_NODE / "pve-ssl.pem"
        deadline = time.monotonic() + 60
        while not b_cert.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        add_node(B_NODE, B_ADDRESS, certificates.certificate_fingerprint(b_cert.read_bytes()))
        for env, address, name in ((b_env, B_ADDRESS, "b"), (node_env, "127.0.0.1", "a")):
            log = b_dir / f"web-{name}.log"
            process = web(env, address, port, log)
            processes.append(process)
            wait_listening(address, port, process, log)
        yield Nodes(
            port=port,
            ca=Path(settings.PVE_ETC_DIR) / "pve-root-ca.pem",
            b_dir=b_dir,
            token=f"fw-auditor@pve!ci={secret}",
        )
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        b_replicator.stop()
        for name in (B_NODE, "deadnode", "impostor"):
            for node in Node.objects.filter(name=name):
                node.delete()
        for entry in ACLEntry.objects.filter(ugid__in=["fw-auditor@pve", "fw-nobody@pve"]):
            entry.delete()


@pytest.fixture(scope="module")
def b_task(nodes: Nodes) -> str:
    """A VM created on node B through node A: its ``qmcreate`` task exists on B only."""
    session, csrf = nodes.session("root@pam", "test-root-password")
    answer = session.post(
        nodes.url(f"/nodes/{B_NODE}/qemu"),
        data={"vmid": "7700", "name": "forwarded"},
        headers={"CSRFPreventionToken": csrf},
    )
    assert answer.status_code == 200, answer.text
    upid = answer.json()["data"]
    assert upid.startswith(f"UPID:{B_NODE}:")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = session.get(nodes.url(f"/nodes/{B_NODE}/tasks/{upid}/status")).json()["data"]
        if status["status"] == "stopped":
            assert status["exitstatus"] == "OK"
            return upid
        time.sleep(0.2)
    raise AssertionError("the task on node B did not finish")


def test_a_request_for_another_node_is_answered_by_that_node(nodes, b_task):
    session, _csrf = nodes.session("root@pam", "test-root-password")
    assert nodes.b_query("SELECT node_id FROM vms_vm WHERE vmid = 7700") == [(B_NODE,)]
    assert not VM.objects.filter(vmid=7700).exists()  # B did the work, in its own state
    on_b = session.get(nodes.url(f"/nodes/{B_NODE}/tasks")).json()
    assert [item["upid"] for item in on_b["data"]] == [b_task] and on_b["total"] == 1
    on_a = session.get(nodes.url("/nodes/testnode/tasks?limit=1000")).json()["data"]
    assert b_task not in [item["upid"] for item in on_a]
    log = session.get(nodes.url(f"/nodes/{B_NODE}/tasks/{b_task}/log?download=1"))
    assert log.status_code == 200 and log.text.splitlines()[-1] == "TASK OK"
    assert log.headers["Content-Disposition"].startswith(f'attachment; filename="task-{B_NODE}-qmcreate-')


def test_credentials_pass_through_and_the_target_decides(nodes, b_task):
    path = nodes.url(f"/nodes/{B_NODE}/tasks/{b_task}/status")
    auditor, _ = nodes.session("fw-auditor@pve")
    assert auditor.get(path).json()["data"]["upid"] == b_task
    nobody_user = User.objects.get(userid="fw-nobody@pve")
    assert has_privileges(nobody_user, f"/nodes/{B_NODE}", ["Sys.Audit"])  # A would allow it ...
    nobody, _ = nodes.session("fw-nobody@pve")
    refused = nobody.get(path)
    assert refused.status_code == 403  # ... B, which decides, does not
    assert refused.json()["message"] == f"Permission check failed (/nodes/{B_NODE}, Sys.Audit)\n"
    assert refused.reason == f"Permission check failed (/nodes/{B_NODE}, Sys.Audit)"  # relayed unchanged
    extjs = path.replace("/api2/json/", "/api2/extjs/")  # B answers json; A wraps it once
    wrapped = auditor.get(extjs).json()
    assert wrapped["success"] == 1 and wrapped["data"]["upid"] == b_task
    refused_extjs = nobody.get(extjs)
    assert refused_extjs.status_code == 200 and refused_extjs.json()["status"] == 403
    token = requests.get(path, headers={"Authorization": f"PVEAPIToken={nodes.token}"}, verify=str(nodes.ca))
    assert token.status_code == 200 and token.json()["data"]["status"] == "stopped"
    assert requests.get(path, verify=str(nodes.ca)).status_code == 401  # anonymous: refused by A
    root, _csrf = nodes.session("root@pam", "test-root-password")
    no_csrf = root.post(nodes.url(f"/nodes/{B_NODE}/qemu"), data={"vmid": "7701"})
    assert no_csrf.status_code == 401 and not nodes.b_query("SELECT vmid FROM vms_vm WHERE vmid = 7701")


def test_unknown_unreachable_impostor_nodes_and_loops(nodes, etc_dir):
    root, _csrf = nodes.session("root@pam", "test-root-password")
    unknown = root.get(nodes.url("/nodes/nosuchnode/tasks"))
    assert unknown.status_code == 400 and unknown.json()["errors"] == {"node": "no such cluster node 'nosuchnode'"}
    add_node("deadnode", "127.0.0.3", "")
    dead = root.get(nodes.url("/nodes/deadnode/tasks"))
    assert dead.status_code == 595 and dead.json()["message"] == "Connection refused\n"
    a_fingerprint = certificates.certificate_fingerprint((etc_dir / "nodes" / "testnode" / "pve-ssl.pem").read_bytes())
    add_node("impostor", B_ADDRESS, a_fingerprint)  # B's certificate is not the one known for "impostor"
    impostor = root.get(nodes.url("/nodes/impostor/tasks"))
    assert impostor.status_code == 596 and "fingerprint" in impostor.json()["message"]
    loop = root.get(nodes.url(f"/nodes/{B_NODE}/tasks"), headers={"PVEDisableProxy": "true"})
    assert loop.status_code == 500 and loop.json()["message"] == "proxy loop detected\n"


def test_follow_a_task_on_another_node(nodes, b_task):
    out = StringIO()
    with override_settings(PVE_HTTPS_PORT=nodes.port):
        assert follow_task(b_task, out) == "OK"
    assert out.getvalue().splitlines()[-1] == "TASK OK"
