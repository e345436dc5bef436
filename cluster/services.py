"""Cluster services: the cluster log."""

from __future__ import annotations

import os
import time

from django.conf import settings

from cluster.models import ClusterLogEntry

MAX_MESSAGE = 4096


def log_cluster_message(msg: str, *, user: str = "", tag: str = "pve-django", pri: int = 6) -> ClusterLogEntry:
    """Append an entry to the replicated cluster log (time from this writer's clock)."""
    entry = ClusterLogEntry(
        time=int(time.time()),
        pri=pri,
        tag=tag[:64],
        pid=os.getpid(),
        node=settings.PVE_NODE_NAME,
        user=user[:128],
        msg=msg[:MAX_MESSAGE],
    )
    entry.save()
    return entry


def recent_cluster_log(count: int, user: str | None = None) -> list[ClusterLogEntry]:
    entries = ClusterLogEntry.objects.all() if user is None else ClusterLogEntry.objects.filter(user=user)
    return list(entries.order_by("-time")[:count])
