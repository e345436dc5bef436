"""``manage.py lab``: a 3-node cluster of whole nodes a user reaches from the host, driven from separate
invocations (up, status, exec, partition, heal, down), leaving no namespace, link or process behind."""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import requests

from cluster.lab import netns

REPO = Path(__file__).resolve().parent.parent.parent
# A lab's portals take 10.213.0.0/24 on the host: test runs sharing this host take turns.
HOST_LOCK = Path("/tmp/pve-lab-host.lock")


def lab(data: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PVE_DATA_DIR": str(data), "PVE_NODE_NAME": "labhost"}
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "lab", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_status(data: Path, node: str, quorate: bool, timeout: float = 30) -> str:
    """``lab status`` once ``node``'s replicator reports the wanted quorum."""
    wanted = f"{node}: quorate {'yes' if quorate else 'no'}"
    deadline = time.monotonic() + timeout
    output = ""
    while wanted not in output and time.monotonic() < deadline:
        output = lab(data, "status").stdout
        time.sleep(0.3)
    assert wanted in output, output
    return output


def api_until(session: requests.Session, url: str, ok: object, timeout: float = 10) -> requests.Response:
    """GET ``url`` until ``ok(response)`` (a write on one node reaches another within the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        response = session.get(url, timeout=10)
        if ok(response) or time.monotonic() > deadline:  # type: ignore[operator]
            return response
        time.sleep(0.2)


def test_lab_up_serves_every_portal_to_the_host_and_down_leaves_nothing(tmp_path):
    with open(HOST_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lab_lifecycle(tmp_path)


def lab_lifecycle(tmp_path: Path) -> None:
    up = lab(tmp_path, "up", "--nodes", "3", timeout=240)
    state: dict = {}
    processes: set[int] = set()
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        state = json.loads((tmp_path / "lab" / "state.json").read_text())
        assert stat.S_IMODE((tmp_path / "lab" / "state.json").stat().st_mode) == 0o600
        namespaces = [f"pvelab{state['tag']}n{i}" for i in (1, 2, 3)]
        for namespace in namespaces:
            found = netns.pids(namespace)
            assert len(found) >= 7, found  # corosync, runnode, redis, replicator, worker, beat, web
            processes.update(found)
        assert len(state["pids"]) == 3 and len(state["service_pids"]) == 3
        assert {*state["pids"].values(), *state["service_pids"].values()} <= processes
        assert f"pl{state['tag']}h" in netns.links()
        assert "corosync ready on 3 nodes" in up.stdout and "node3: portal answers" in up.stdout
        password = re.search(r"login: root@pam, password (\S+)", up.stdout).group(1)
        assert password == state["root_password"] and len(password) >= 12
        for i in (1, 2, 3):
            assert f"node{i}: address 10.213.0.{i}, portal https://10.213.0.{i}:8006/" in up.stdout
        assert lab(tmp_path, "up").returncode != 0  # one lab at a time
        other = lab(tmp_path / "other", "up", "--nodes", "1")  # and one on this host's 10.213.0.0/24
        assert other.returncode != 0 and f"already on this host's link pl{state['tag']}h" in other.stderr

        # From the host: every portal over HTTPS, its certificate checked against the cluster CA.
        ca = str(tmp_path / "lab" / "node1" / "etc" / "pve" / "pve-root-ca.pem")
        session = requests.Session()
        session.trust_env = False  # no proxy between the host and its lab
        session.verify = ca
        for i in (1, 2, 3):
            page = session.get(f"https://10.213.0.{i}:8006/admin/login/", timeout=10)
            assert page.status_code == 200 and 'name="password"' in page.text

        # A ticket from node2 with the printed password; a VM created through node1's API with it.
        ticket_url = "https://10.213.0.2:8006/api2/json/access/ticket"
        wrong = session.post(ticket_url, data={"username": "root@pam", "password": password + "x"}, timeout=10)
        assert wrong.status_code == 401
        login = session.post(ticket_url, data={"username": "root@pam", "password": password}, timeout=10)
        assert login.status_code == 200, login.text
        ticket = login.json()["data"]
        session.cookies.set("PVEAuthCookie", ticket["ticket"])
        session.headers["CSRFPreventionToken"] = ticket["CSRFPreventionToken"]
        created = session.post(
            "https://10.213.0.1:8006/api2/json/nodes/node1/qemu", data={"vmid": 100, "name": "labvm"}, timeout=30
        )
        assert created.status_code == 200, created.text
        assert created.json()["data"].startswith("UPID:node1:")

        # ... is seen through node2's and node3's APIs and in node3's config tree.
        nextid = api_until(
            session, "https://10.213.0.2:8006/api2/json/cluster/nextid", lambda r: r.json()["data"] == "101"
        )
        assert nextid.json()["data"] == "101", nextid.text
        taken = session.get("https://10.213.0.3:8006/api2/json/cluster/nextid", params={"vmid": 100}, timeout=10)
        assert taken.status_code == 400 and "already exists" in taken.json()["errors"]["vmid"]
        conf = tmp_path / "lab" / "node3" / "etc" / "pve" / "nodes" / "node1" / "qemu-server" / "100.conf"
        deadline = time.monotonic() + 30  # the tree is rendered after the apply, in batches
        while not conf.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "name: labvm" in conf.read_text()
        nodes = session.get("https://10.213.0.3:8006/api2/json/nodes", timeout=10).json()["data"]
        assert sorted(n["node"] for n in nodes) == ["node1", "node2", "node3"]

        status = lab(tmp_path, "status")
        assert status.returncode == 0, status.stderr
        for i in (1, 2, 3):
            assert re.search(rf"node{i}: quorate yes, version \d+, synced yes", status.stdout), status.stdout

        nodes_list = lab(tmp_path, "exec", "node2", "--", sys.executable, str(REPO / "manage.py"), "pvecm", "nodes")
        assert nodes_list.returncode == 0, nodes_list.stderr
        assert nodes_list.stdout.splitlines()[3:] == [
            "         1          1 node1",
            "         2          1 node2 (local)",
            "         3          1 node3",
        ]
        assert lab(tmp_path, "partition", "node3").returncode == 0
        wait_status(tmp_path, "node3", quorate=False)
        assert lab(tmp_path, "heal").returncode == 0
        wait_status(tmp_path, "node3", quorate=True)
        assert lab(tmp_path, "partition", "node9").returncode != 0
    finally:
        down = lab(tmp_path, "down", timeout=180)
    assert down.returncode == 0, down.stderr
    assert not any(name.startswith(f"pvelab{state['tag']}") for name in netns.namespaces())
    assert f"pl{state['tag']}h" not in netns.links()
    assert [pid for pid in processes if running(pid)] == []
    again = lab(tmp_path, "down")
    assert again.returncode != 0 and "no lab is up" in again.stderr
