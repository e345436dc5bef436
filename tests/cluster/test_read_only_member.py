"""A cluster member without corosync comes up read-only, says what is missing, and heals by itself.

A one-node lab cluster is created with ``pvecm create``; then the node runner starts again
without corosync and without the corosync authkey (and the host's corosync.conf removed).
With ``PVE_TRANSPORT=auto`` the node must not fall back to the always-writable local transport:
its database says it is in a cluster. The web server starts (API and admin answer, writes are
refused with Proxmox's "cluster not ready - no quorum?"), the runner's log and ``pvecm status``
name what is missing, and once the authkey is back and corosync runs the node becomes writable
without a restart.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.lab import netns, services, standalone
from cluster.lab.cluster import LabCluster
from portal.runner.node import COROSYNC_SCRIPT
from tests.cluster.lifecycle import api, login, manage
from tests.cluster.replication import status, wait_for

pytestmark = pytest.mark.slow
PASSWORD = "read-only-root-pw"
PROBE = Path(__file__).resolve().parent / "admin_probe.py"
NOT_READY = "cluster not ready - no quorum?"


def _one_standalone_node(cluster: LabCluster) -> None:
    """The node's namespace on the bridge, no corosync yet: its runner starts standalone."""
    node = cluster.nodes[0]
    netns.create_bridge(cluster.bridge_ns)
    node.env.update(standalone.standalone_environment(node))
    node.env.update(services.web_environment(node.address))
    node.directory.mkdir(parents=True, exist_ok=True)
    netns.attach_node(cluster.bridge_ns, node.namespace, node.port, f"{node.address}/24")


@pytest.fixture(scope="module")
def lab(lab_cluster):
    return lab_cluster(
        1,
        name="readonly",
        root_password=PASSWORD,
        env={"PVE_LOG_LEVEL": "INFO"},
        up=_one_standalone_node,
        kind="node",
        timeout=180,
    )


def web_answers(lab: LabCluster) -> bool:
    """The node's API answers over TLS (401 without a ticket)."""
    try:
        return api(lab, lab.nodes[0], "GET", "/version")[0] == 401
    except AssertionError:  # nothing listens yet
        return False


def admin_save(lab: LabCluster, path: str, **fields: str) -> dict:
    node = lab.nodes[0]
    ca = node.directory / "etc" / "pve" / "pve-root-ca.pem"
    argv = [sys.executable, str(PROBE), f"https://{node.address}:8006", str(ca), "root@pam", PASSWORD, path]
    process = lab.run(
        node, [*argv, *(f"{k}={v}" for k, v in fields.items())], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()[-2000:]
    return json.loads(out)


def test_a_member_without_corosync_and_authkey_is_read_only_and_says_why(lab):
    node = lab.nodes[0]
    created = manage(lab, node, "pvecm", "create", "rolab")
    assert created.returncode == 0, created.stderr + created.stdout
    authkey = Path(node.env["PVE_COROSYNC_AUTHKEY"])
    host_conf = Path(node.env["PVE_COROSYNC_CONF"])
    lab.stop_service(node)  # the runner stops its corosync too
    authkey.rename(authkey.with_name("authkey.saved"))
    host_conf.unlink()
    runner_log = node.directory / "node.log"
    offset = runner_log.stat().st_size
    node.env["PVE_RUN_COROSYNC"] = "0"  # nobody starts corosync now
    lab.start_service(node, "node")

    wait_for(lambda: web_answers(lab), 180, interval=1, what="the web server of the read-only node")
    state = status(node)
    assert state["clustered"] and not state["quorate"], state
    wait_for(lambda: any("corosync is not running" in r for r in status(node).get("not_ready", [])), 30, what="reason")
    reasons = status(node)["not_ready"]
    assert any(f"no corosync authkey at {authkey}" in r for r in reasons), reasons
    # The replicator writes corosync.conf back from the cluster state; the authkey only an operator can.
    wait_for(host_conf.exists, 30, what="corosync.conf restored from the cluster state")

    auth = login(lab, node, PASSWORD)
    code, body = api(lab, node, "GET", "/cluster/config/nodes", auth=auth)
    assert code == 200 and [n["name"] for n in body["data"]] == ["node1"], body
    code, body = api(lab, node, "POST", "/access/users", {"userid": "ro@pve", "password": "ro-password"}, auth)
    assert code == 503 and body["message"].startswith(NOT_READY), body
    assert "corosync is not running" in body["message"] and "no corosync authkey" in body["message"]
    saved = admin_save(
        lab, "/admin/cluster/clustersettings/datacenter/change/", options='{"keyboard": "de", "console": "html5"}'
    )
    assert saved["login"] == 200 and saved["form"] == 200, saved
    assert any(message.lower().startswith(NOT_READY) for message in saved["messages"]), json.dumps(saved, indent=1)
    assert status(node)["version"] == state["version"]  # nothing written

    shown = manage(lab, node, "pvecm", "status")
    assert shown.returncode != 0 and "Cannot initialize CMAP service" in shown.stderr
    assert "Name:             rolab" in shown.stdout and "Quorate:          No" in shown.stdout, shown.stdout
    assert "corosync is not running" in shown.stdout and f"no corosync authkey at {authkey}" in shown.stdout

    def said() -> str:
        return runner_log.read_text(errors="replace")[offset:]

    wait_for(lambda: "configuration is read-only: " in said(), 30, what="the runner's log to say why")
    assert "node node1 is a member of cluster 'rolab'" in said()
    reported = [line for line in said().splitlines() if "configuration is read-only: " in line]
    assert "corosync is not running" in reported[0] and "no corosync authkey" in reported[0], reported


def test_the_member_becomes_writable_by_itself_once_corosync_runs(lab):
    node = lab.nodes[0]
    authkey = Path(node.env["PVE_COROSYNC_AUTHKEY"])
    runner_log = node.directory / "node.log"
    offset = runner_log.stat().st_size
    authkey.with_name("authkey.saved").rename(authkey)
    wait_for(lambda: not any("authkey" in r for r in status(node).get("not_ready", [])), 10, what="authkey seen")
    lib = node.directory / "corosync-lib"
    lib.mkdir(exist_ok=True)
    conf = node.env["PVE_COROSYNC_CONF"]
    with open(node.directory / "corosync-manual.log", "ab") as out:
        corosync = lab.run(
            node,
            ["sh", "-c", COROSYNC_SCRIPT, "sh", str(authkey), conf, str(lib)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: status(node).get("quorate") and status(node).get("not_ready") == [],
            60,
            interval=0.2,
            what="the node quorate and writable",
        )
        auth = login(lab, node, PASSWORD)
        code, body = api(lab, node, "POST", "/access/users", {"userid": "ro@pve", "password": "ro-password"}, auth)
        assert code == 200, body
        shown = manage(lab, node, "pvecm", "status")
        assert shown.returncode == 0 and "Quorate:          Yes" in shown.stdout, shown.stdout + shown.stderr
        wait_for(lambda: "configuration is writable" in runner_log.read_text(errors="replace")[offset:], 30)
        said = runner_log.read_text(errors="replace")[offset:]
        assert "starting replicator" not in said and "asked to be restarted" not in said  # healed in place
    finally:
        corosync.send_signal(signal.SIGTERM)
        corosync.wait(timeout=30)
