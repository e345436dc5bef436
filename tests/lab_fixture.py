"""The lab-cluster fixture: labs built, started and always torn down, with no namespace left behind.

``lab_cluster(size, name=..., env=..., kind=...)`` (module scope) returns a running lab; every lab
a module made is torn down after its last test. ``running_lab`` is the same as a context manager,
for a lab that must be gone sooner (one test's) and for the benches. Loaded as a plugin by
``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.lab import netns
from cluster.lab.cluster import LabCluster

Step = Callable[[LabCluster], object]


@contextlib.contextmanager
def running_lab(
    directory: Path,
    size: int,
    *,
    kind: str | None = "replicator",
    up: Step = LabCluster.up,
    prepare: Step | None = None,
    timeout: float = 90,
    **options: Any,
) -> Iterator[LabCluster]:
    """A lab of ``size`` nodes in ``directory`` (``options`` go to ``LabCluster``), torn down on exit.

    In order: ``up`` (by default the bridge, the namespaces and corosync on every node),
    ``prepare`` (anything the nodes' processes must find), then ``kind`` on every node
    ("replicator", "node" for whole node runners, None for nothing) until each is in sync.
    """
    cluster = LabCluster(directory, size, **options)
    try:
        up(cluster)
        if prepare is not None:
            prepare(cluster)
        if kind is not None:
            cluster.start_services(kind, timeout=timeout)
        yield cluster
    finally:
        cluster.teardown()
    left = ({node.namespace for node in cluster.nodes} | {cluster.bridge_ns}) & netns.namespaces()
    assert not left, f"the lab left namespaces behind: {sorted(left)}"


@pytest.fixture(scope="module")
def lab_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LabCluster]]:
    """``lab_cluster(size, *, name="lab", **running_lab_options)``: a running lab, torn down with the module."""
    with contextlib.ExitStack() as labs:

        def make(size: int, *, name: str = "lab", **options: Any) -> LabCluster:
            return labs.enter_context(running_lab(tmp_path_factory.mktemp(name), size, **options))

        yield make
