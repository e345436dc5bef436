"""Which append-only rows of a replaced history are written again (pure logic over snapshot rows)."""

from __future__ import annotations

import uuid

from django.test import override_settings

from replicator.divergence import cluster_log_message, lost_rows

LOG = "cluster.clusterlogentry"


def entry(time: int, msg: str = "") -> list:
    fields = {"time": time, "pri": 6, "tag": "test", "pid": 1, "node": "node3", "user": "", "msg": msg or f"at {time}"}
    return [LOG, str(uuid.uuid4()), 1, fields]


def test_rows_the_winner_lacks_are_merged_unless_they_aged_out_of_its_full_ring():
    ring = [entry(1000 + i) for i in range(100)]
    shared, recent, aged = ring[50], entry(1050, "only on the forced side"), entry(500, "long ago")
    with override_settings(PVE_CLUSTER_LOG_MAX=100):
        assert lost_rows([shared, recent, aged], ring) == [recent]
    with override_settings(PVE_CLUSTER_LOG_MAX=200):  # the ring is not full: nothing aged out of it
        assert lost_rows([shared, recent, aged], ring) == [recent, aged]


def test_the_cluster_log_names_the_node_the_reason_and_the_file():
    report = {"message": "history diverged from node1's (forced quorum?)", "lost_version": 42, "file": "/d/f.json"}
    assert cluster_log_message("node3", report) == (
        "history of node node3 diverged from node1's (forced quorum?); local state at version 42 kept in /d/f.json"
    )
