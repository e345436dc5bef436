"""Replicated cluster models: datacenter options, nodes and the cluster log."""

from __future__ import annotations

import os
import re
import uuid
from time import time as now
from typing import Any

from django.conf import settings
from django.db import models

from cluster.exceptions import InvalidOptions
from replicator.models import ReplicatedModel

MAX_OPTION = 4096
_OPTION_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
MAX_MESSAGE = 4096


class ClusterSettings(ReplicatedModel):
    """Cluster-wide options rendered as ``datacenter.cfg`` (one row, id ``datacenter``)."""

    id = models.CharField(max_length=16, primary_key=True, default="datacenter")
    options = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = "cluster settings"
        verbose_name_plural = "cluster settings"

    def __str__(self) -> str:
        return "datacenter.cfg"

    @staticmethod
    def check_option(key: Any, value: Any) -> None:
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


class Node(ReplicatedModel):
    """A cluster member; the directory ``nodes/<name>`` of the tree belongs to it."""

    name = models.CharField(max_length=63, primary_key=True)
    nodeid = models.PositiveIntegerField(unique=True)
    address = models.CharField(max_length=255, blank=True, default="")
    votes = models.PositiveSmallIntegerField(default=1)
    ssl_fingerprint = models.CharField(max_length=128, blank=True, default="")
    links = models.JSONField(
        default=dict,
        blank=True,
        help_text='Corosync link addresses by link number, e.g. {"1": "10.1.0.1"}; link 0 defaults to the address.',
    )
    joining = models.BooleanField(
        default=False,
        help_text="Added to the nodelist, not joined yet: its votes count once it has (quorum_votes 0 until then).",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def quorum_votes(self) -> int:
        """The votes corosync counts: none while the node is joining (a join that never completes costs no quorum)."""
        return 0 if self.joining else self.votes


class CorosyncConfig(ReplicatedModel):
    """The cluster's corosync identity; with the nodes it renders ``corosync.conf`` (one row, id ``corosync``).

    No row or an empty cluster name means a standalone node: no corosync.conf anywhere. Change it
    through ``cluster.corosync.conf`` so that ``config_version`` rises with every rendered change.
    """

    id = models.CharField(max_length=16, primary_key=True, default="corosync")
    cluster_name = models.CharField(max_length=15, blank=True, default="")
    config_version = models.PositiveBigIntegerField(default=0)
    totem = models.JSONField(default=dict, blank=True, help_text="totem options besides name, version, interfaces")
    interfaces = models.JSONField(default=dict, blank=True, help_text='options by link number, e.g. {"0": {}}')
    sections = models.JSONField(default=dict, blank=True, help_text="other top-level sections (logging, system)")
    quorum_device = models.JSONField(
        default=dict, blank=True, help_text="quorum.device (QDevice: model net, votes, net options); empty: none"
    )

    class Meta:
        verbose_name = "corosync configuration"

    def __str__(self) -> str:
        return "corosync.conf"


class ClusterLogEntry(ReplicatedModel):
    """One entry of the cluster-wide log (``/cluster/log``); the admin audit trail too.

    A ring of PVE_CLUSTER_LOG_MAX entries: the replicator drops the oldest at fixed versions.
    Entries of a node whose diverged history was replaced are written again (merged by time).
    """

    ring_size_setting = "PVE_CLUSTER_LOG_MAX"
    ring_order = ("time", "uid")
    merge_after_divergence = True

    uid = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    time = models.BigIntegerField(help_text="Epoch seconds, from the writer's clock.")
    pri = models.PositiveSmallIntegerField(default=6)
    tag = models.CharField(max_length=64, default="")
    pid = models.PositiveIntegerField(default=0)
    node = models.CharField(max_length=63)
    user = models.CharField(max_length=128, default="")
    msg = models.CharField(max_length=4096)

    class Meta:
        ordering = ["-time", "uid"]
        verbose_name_plural = "cluster log"

    def __str__(self) -> str:
        return self.msg

    @classmethod
    def build(cls, msg: str, *, node: str, pri: int = 6, tag: str = "", user: str = "") -> ClusterLogEntry:
        """An unsaved entry written now by this process (the replicator's own are made here too)."""
        return cls(time=int(now()), pri=pri, tag=tag, pid=os.getpid(), node=node, user=user, msg=msg)

    @classmethod
    def write(cls, msg: str, *, user: str = "", tag: str = "pve-django", pri: int = 6) -> ClusterLogEntry:
        """Append an entry from this node (time from this writer's clock); ``cluster.services.log_cluster_message``."""
        entry = cls.build(msg[:MAX_MESSAGE], node=settings.PVE_NODE_NAME, pri=pri, tag=tag[:64], user=user[:128])
        entry.save()
        return entry

    @classmethod
    def recent(cls, count: int, user: str | None = None) -> list[ClusterLogEntry]:
        """The newest ``count`` entries (of ``user``'s changes only, when given)."""
        entries = cls.objects.all() if user is None else cls.objects.filter(user=user)
        return list(entries.order_by("-time")[:count])
