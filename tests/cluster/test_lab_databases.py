"""Lab nodes never share a database: SQLite files of their own, or databases of their own on a server.

Pure: the nodes' settings, without starting a lab.
"""

from __future__ import annotations

import os

import pytest

from cluster.lab import services
from cluster.lab.cluster import LabCluster
from tests.harness import POSTGRES_SOCKET

KEYS = (services.CLUSTER_URL, services.LOCAL_URL)


@pytest.mark.parametrize("postgres", [None, POSTGRES_SOCKET], ids=["sqlite", "postgresql"])
def test_every_node_has_databases_of_its_own_whatever_the_caller_uses(tmp_path, monkeypatch, postgres):
    shared = "postgresql://postgres@127.0.0.1:5432/the_callers_database"
    for key in KEYS:  # a test session on PostgreSQL has these set for its own node
        monkeypatch.setenv(key, shared)
    lab = LabCluster(tmp_path, 3, postgres=postgres)
    urls = [{**os.environ, **node.env}[key] for node in lab.nodes for key in KEYS]  # what a node's process sees
    assert len(set(urls)) == 6 and shared not in urls
    for node in lab.nodes:
        if postgres:
            assert services.database_name(node.env[services.CLUSTER_URL]) == f"pvelab{lab.tag}_{node.name}_cluster"
        else:
            assert node.env[services.CLUSTER_URL] == f"sqlite:///{node.directory / 'cluster.db'}"


def test_a_database_url_for_all_nodes_is_refused(tmp_path):
    with pytest.raises(ValueError, match="never share a database"):
        LabCluster(tmp_path, 3, env={services.CLUSTER_URL: "postgresql://postgres@/one?host=/var/run/postgresql"})
