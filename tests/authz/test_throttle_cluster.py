"""Failed logins are counted across the cluster through the volatile status, never written replicated."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from authz import throttle
from cluster.lab import services
from cluster.lab.cluster import LabCluster, LabNode
from tests.cluster.replication import status, wait_for
from tests.harness import REPO

pytestmark = pytest.mark.slow
PROBE = Path(__file__).with_name("throttle_probe.py")
USER, ADDRESS = "root@pam", "198.51.100.7"


@pytest.fixture(scope="module")
def lab(lab_cluster: Callable[..., LabCluster]) -> LabCluster:
    return lab_cluster(2, name="throttle", env={"PVE_STATUS_INTERVAL": "1"})


def probe(node: LabNode, *args: str) -> dict[str, Any]:
    """The probe with the node's settings (its databases, its replicator socket)."""
    result = subprocess.run(
        [sys.executable, str(PROBE), *args],
        env={**services.without_host_settings(dict(os.environ)), **node.env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def local_counts(node: LabNode) -> dict[str, int]:
    with sqlite3.connect(f"file:{node.directory / 'local.db'}?mode=ro", uri=True, timeout=10) as db:
        return dict(db.execute("SELECT key, count FROM authz_loginfailures").fetchall())


def test_failures_on_one_node_slow_down_logins_on_the_other(lab):
    node1, node2 = lab.nodes
    version = status(node1)["version"]
    assert probe(node2, "counts", USER, ADDRESS) == {"user": 0, "address": 0, "known": True, "delay": 0.0}

    assert probe(node1, "fail", USER, ADDRESS, "8")["done"]
    assert probe(node1, "counts", USER, ADDRESS)["user"] == 8
    # node2 hears of them through node1's volatile status, within about a status interval.
    wait_for(lambda: probe(node2, "counts", USER, ADDRESS)["user"] == 8, 60, interval=0.2, what="node1's counts")
    seen = probe(node2, "counts", USER, ADDRESS)
    assert seen == {"user": 8, "address": 8, "known": True, "delay": throttle.schedule(8, throttle.USER_MAX_DELAY)}
    assert seen["delay"] > 0
    assert local_counts(node2) == {}  # node2 stored nothing: they are node1's failures

    # Failures on both nodes add up.
    assert probe(node2, "fail", USER, ADDRESS, "3")["done"]
    assert local_counts(node2) == {f"user:{USER}": 3, f"address:{ADDRESS}": 3}
    assert probe(node2, "counts", USER, ADDRESS)["user"] == 11
    wait_for(lambda: probe(node1, "counts", USER, ADDRESS)["address"] == 11, 60, interval=0.2, what="the sum")

    # Eleven unauthenticated failures, not one replicated write (each login returned after its write
    # would have been applied).
    assert status(node1)["version"] == version and status(node2)["version"] == version


def test_without_its_replicator_a_node_still_delays_logins(lab):
    node2 = lab.nodes[1]
    lab.stop_service(node2)
    counts = probe(node2, "counts", "fresh@pve", "198.51.100.8")
    assert counts["known"] is False and counts["delay"] >= throttle.UNKNOWN_DELAY
