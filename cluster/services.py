"""Cluster services: the cluster log and the datacenter options (``datacenter.cfg``)."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.db import transaction

from cluster.models import ClusterLogEntry, ClusterSettings

MAX_MESSAGE = 4096
MAX_OPTION = 4096
_OPTION_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class InvalidOptions(ValueError):
    """Datacenter options that cannot be written (nothing was changed)."""


def log_cluster_message(msg: str, *, user: str = "", tag: str = "pve-django", pri: int = 6) -> ClusterLogEntry:
    """Append an entry to the replicated cluster log (time from this writer's clock)."""
    entry = ClusterLogEntry.build(
        msg[:MAX_MESSAGE], node=settings.PVE_NODE_NAME, pri=pri, tag=tag[:64], user=user[:128]
    )
    entry.save()
    return entry


def recent_cluster_log(count: int, user: str | None = None) -> list[ClusterLogEntry]:
    entries = ClusterLogEntry.objects.all() if user is None else ClusterLogEntry.objects.filter(user=user)
    return list(entries.order_by("-time")[:count])


def check_datacenter_option(key: Any, value: Any) -> None:
    """One ``key: value`` line of datacenter.cfg: a lower-case key, a scalar value without a line break."""
    if not isinstance(key, str) or not _OPTION_KEY_RE.match(key):
        raise InvalidOptions(f"invalid option name {key!r}")
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, (str, int)):
        raise InvalidOptions(f"{key}: a value is a string or a number")
    text = str(value)
    if not text.strip() or len(text) > MAX_OPTION or any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InvalidOptions(f"{key}: invalid value {text[:80]!r} (one line of printable text)")


def update_datacenter_options(row: ClusterSettings, *, actor: str) -> ClusterSettings:
    """Save datacenter.cfg options (Proxmox's ``PUT /cluster/options``), audited in the same change set.

    ``row.version`` is the version the caller read: a newer change by someone else is a conflict.
    """
    if not isinstance(row.options, dict):
        raise InvalidOptions("options must map option names to values")
    for key, value in row.options.items():
        check_datacenter_option(key, value)
    with transaction.atomic(using="cluster"):
        log_cluster_message(f"datacenter options set: {', '.join(sorted(row.options)) or 'none'}", user=actor)
        row.save()
    return row
