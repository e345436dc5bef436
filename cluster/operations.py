"""Task operations of the cluster app: creating a cluster and joining one (run by this node's worker)."""

from __future__ import annotations

from typing import Any

from cluster import services
from portal.tasks.registry import operation

LIFECYCLE_TIME_LIMIT = 600


@operation("cluster.create", time_limit=LIFECYCLE_TIME_LIMIT)
def create_cluster(task: Any, name: str, nodeid: int | None, votes: int, actor: str) -> None:
    services.create_cluster(name, nodeid=nodeid, votes=votes, progress=task.log, user=actor)


@operation("cluster.join", time_limit=LIFECYCLE_TIME_LIMIT)
def join_cluster(
    task: Any, host: str, password: str, fingerprint: str, nodeid: int | None, votes: int, force: bool
) -> None:
    """The API join (``POST /cluster/config/join``); ``password`` comes from the task's one-time secret file."""
    services.join_cluster_over_api(
        host, password=password, fingerprint=fingerprint, nodeid=nodeid, votes=votes, force=force, progress=task.log
    )
