"""Clock skew: offsets from the volatile status, the warning rule, and a lab node whose clock runs 5 s ahead."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings

from cluster.lab import services
from cluster.lab.cluster import LabCluster, LabNode
from cluster.status import clock
from replicator import client, volatile
from tests.cluster.replication import wait_for

REPO = Path(__file__).resolve().parent.parent.parent


def entry(sent: float, received: float, *, online: int = 1, key: str = "clock") -> dict:
    return {key: sent, "received": received, "online": online}


def test_offset_is_the_published_clock_minus_the_arrival_clock():
    board = {
        "node1": entry(1000.0, 1000.002),
        "node2": entry(1007.5, 1000.0),
        "old": entry(995, 1000.4, key="time"),  # a node publishing whole seconds only
        "gone": entry(2000.0, 1000.0, online=0),
        "broken": {"clock": "soon", "received": 1000.0, "online": 1},
        "bool": {"clock": True, "received": 1000.0, "online": 1},
    }
    found = clock.offsets(board)
    assert set(found) == {"node1", "node2", "old"}
    assert found["node1"] == pytest.approx(-0.002)
    assert found["node2"] == pytest.approx(7.5)
    assert found["old"] == pytest.approx(-5.4)


def test_the_node_far_from_the_median_is_flagged_on_every_observer():
    # Seen from node1 (its own clock is the reference) and from the skewed node3 (everyone looks 5 s behind).
    from_node1 = {"node1": entry(0.0, 0.0), "node2": entry(0.3, 0.0), "node3": entry(5.0, 0.0)}
    from_node3 = {"node1": entry(0.0, 5.0), "node2": entry(0.3, 5.0), "node3": entry(5.0, 5.0)}
    for board in (from_node1, from_node3):
        clocks = clock.node_clocks(board, threshold=2)
        assert [name for name, c in clocks.items() if c.warn] == ["node3"]
        assert clocks["node3"].skew == pytest.approx(4.7)
        assert clocks["node1"].skew == pytest.approx(-0.3)
        [line] = clock.warnings(clocks, threshold=2)
        assert line.startswith("WARNING: node clocks differ by 5.0 s (more than 2 s): node3 +4.7 s")
        assert "node1" not in line and "node2" not in line
        assert clock.api_fields(clocks["node3"]) == {"clock_offset": 4.7, "clock_warning": 1}
        assert clock.api_fields(clocks["node2"]) == {"clock_offset": 0.0, "clock_warning": 0}


def test_clocks_within_the_threshold_warn_nothing_and_two_nodes_are_both_named():
    close = {"node1": entry(0.0, 0.0), "node2": entry(1.9, 0.0), "node3": entry(0.9, 0.0)}
    assert not any(c.warn for c in clock.node_clocks(close, threshold=2).values())
    assert clock.warnings(clock.node_clocks(close, threshold=2), threshold=2) == []
    pair = {"node1": entry(0.0, 0.0), "node2": entry(3.0, 0.0)}  # nobody can tell which clock is right
    assert [c.warn for c in clock.node_clocks(pair, threshold=2).values()] == [True, True]
    assert clock.node_clocks({}, threshold=2) == {}
    assert clock.api_fields(None) == {}


def test_injected_offset_travels_in_a_real_status_message_and_only_with_fault_injection():
    with override_settings(PVE_FAULT_INJECTION=True, PVE_CLOCK_OFFSET=7.5):
        skewed = volatile.collect("fast", 2)
    with override_settings(PVE_FAULT_INJECTION=False, PVE_CLOCK_OFFSET=7.5):
        ignored = volatile.collect("honest", 3)
    assert isinstance(skewed["time"], int) and skewed["time"] == int(skewed["clock"])
    board = volatile.StatusBoard()
    board.update(json.dumps(skewed).encode())
    board.update(json.dumps(ignored).encode())
    board.members({2, 3})
    found = clock.offsets(board.snapshot())
    assert found["fast"] == pytest.approx(7.5, abs=0.5)
    assert found["honest"] == pytest.approx(0.0, abs=0.5)


def test_a_failing_collector_does_not_silence_the_status_or_its_clock():
    def broken() -> dict:
        raise RuntimeError("table missing")

    volatile.register_collector(broken)
    try:
        data = volatile.collect("node9", 9)
    finally:
        volatile._collectors.remove(broken)
    assert data["node"] == "node9" and isinstance(data["clock"], float)
    assert "maxmem" in data  # the other collectors still ran


# --- a lab cluster whose node3 runs 5 s ahead -----------------------------------------------


def _skew_node3(cluster: LabCluster) -> None:
    cluster.nodes[2].env["PVE_CLOCK_OFFSET"] = "5"


@pytest.fixture(scope="module")
def lab(lab_cluster):
    return lab_cluster(
        3, name="clock", env={"PVE_FAULT_INJECTION": "1", "PVE_STATUS_INTERVAL": "1"}, prepare=_skew_node3
    )


def board(node: LabNode) -> dict:
    return client.request_at(node.socket_path, {"op": "cluster_status"}, timeout=60)["nodes"]


def pvecm_status(node: LabNode, tmp_path: Path) -> str:
    """``pvecm status`` inside the node's namespace (its corosync IPC), with corosync.conf where pvecm looks."""
    etc = tmp_path / f"etc-{node.name}"
    etc.mkdir(exist_ok=True)
    (etc / "corosync.conf").write_text((node.directory / "corosync.conf").read_text())
    result = subprocess.run(
        ["ip", "netns", "exec", node.namespace, sys.executable, str(REPO / "manage.py"), "pvecm", "status"],
        env={**os.environ, **node.env, "PVE_ETC_DIR": str(etc)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


WEB_SCRIPT = """
import json, os
from django.test import Client
client = Client()
login = client.post("/api2/json/access/ticket", {"username": "root@pam", "password": os.environ["PVE_ROOT_PASSWORD"]})
client.cookies["PVEAuthCookie"] = login.json()["data"]["ticket"]
status = client.get("/api2/json/cluster/status").json()["data"]
print(json.dumps({"status": status, "admin": client.get("/admin/").content.decode()}))
"""


def web_view(node: LabNode) -> tuple[dict[str, dict], str]:
    """The node's ``/cluster/status`` entries (by node name, and ``cluster``) and its admin index page, through Django's request stack."""
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "shell", "-c", WEB_SCRIPT],
        env={**os.environ, **node.env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    return {e["id"].removeprefix("node/"): e for e in answer["status"]}, answer["admin"]


def shown_offset(text: str) -> float:
    """The offset a warning shows for node3 (``node3 +5.0 s``): measured, so a transit delay may shave a tenth."""
    match = re.search(r"node3 \+([0-9.]+) s", text)
    assert match is not None, text
    return float(match.group(1))


@pytest.mark.slow
def test_a_skewed_node_is_reported_by_pvecm_status_the_api_and_the_admin(lab, tmp_path):
    first, skewed = lab.nodes[0], lab.nodes[2]
    wait_for(lambda: len(board(first)) == 3 and all(e["online"] for e in board(first).values()), 30, what="status")
    for observer in lab.nodes[:2]:
        text = pvecm_status(observer, tmp_path)
        warning = [line for line in text.splitlines() if "clocks differ" in line]
        assert len(warning) == 1, text
        assert "node1" not in warning[0] and "node2" not in warning[0], warning
        assert shown_offset(warning[0]) == pytest.approx(5.0, abs=0.3), warning  # a loaded host delays a status
        assert "Quorate:          Yes" in text  # Proxmox's output is intact above it
    entries, admin = web_view(first)
    assert entries["node3"]["clock_warning"] == 1 and entries["node3"]["clock_offset"] == pytest.approx(5.0, abs=0.3)
    for name in ("node1", "node2"):
        assert entries[name]["clock_warning"] == 0 and abs(entries[name]["clock_offset"]) < 0.3
    for name in ("node1", "node2", "node3"):  # Proxmox's fields, unchanged
        assert {"type", "id", "name", "nodeid", "ip", "local", "online", "level"} <= set(entries[name])
        assert entries[name]["online"] == 1
    assert entries["cluster"]["quorate"] == 1 and "clock_offset" not in entries["cluster"]
    assert '<li class="warning">WARNING: node clocks differ by' in admin
    assert shown_offset(admin) == pytest.approx(5.0, abs=0.3)

    # node3's clock is fixed (here: 1 s off, inside the 2 s threshold): the warnings go away
    lab.stop_service(skewed)
    skewed.env["PVE_CLOCK_OFFSET"] = "1"
    lab.start_service(skewed)
    services.wait_ready(skewed.socket_path, skewed.service, 60)
    wait_for(lambda: not clock.warnings(clock.node_clocks(board(first))), 30, what="the warning to clear")
    assert "clocks differ" not in pvecm_status(first, tmp_path)
    entries, admin = web_view(first)
    assert entries["node3"]["clock_warning"] == 0 and entries["node3"]["clock_offset"] == pytest.approx(1.0, abs=0.3)
    assert "clocks differ" not in admin
