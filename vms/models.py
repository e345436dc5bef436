"""Replicated VM and storage models."""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import models

from authz.models import Pool
from cluster.models import Node
from replicator.models import ReplicatedModel
from vms.snapshot_config import format_config_file


class Storage(ReplicatedModel):
    """A storage definition (``storage.cfg``): a ``dir`` or ``btrfs`` storage (plugins in ``vms.storage``)."""

    storeid = models.CharField(max_length=64, primary_key=True)
    type = models.CharField(max_length=16, choices=[("dir", "Directory"), ("btrfs", "BTRFS")], default="dir")
    path = models.CharField(max_length=4096)
    content = models.CharField(max_length=255, default="images", help_text="Comma-separated content types.")
    shared = models.BooleanField(default=False)
    nodes = models.CharField(max_length=4096, blank=True, default="", help_text="Comma-separated; empty means all.")
    disable = models.BooleanField(default=False)
    format = models.CharField(
        max_length=8, blank=True, default="", help_text="Default image format; empty: the plugin's."
    )
    pool = models.ForeignKey(Pool, null=True, blank=True, on_delete=models.SET_NULL, related_name="storages")

    class Meta:
        ordering = ["storeid"]

    def __str__(self) -> str:
        return self.storeid


class VM(ReplicatedModel):
    """A QEMU VM: its config, owned by the node whose directory holds it."""

    vmid = models.PositiveIntegerField(primary_key=True)
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="vms")
    pool = models.ForeignKey(Pool, null=True, blank=True, on_delete=models.SET_NULL, related_name="vms")
    config = models.JSONField(default=dict, blank=True)
    snapshots = models.JSONField(
        default=dict, blank=True, help_text="Snapshot name -> its config (the file's [snapname] sections)."
    )
    lock = models.CharField(max_length=32, blank=True, default="")
    lock_owner = models.CharField(
        max_length=255, blank=True, default="", help_text="UPID of the task holding the lock (a lease); empty: none."
    )

    class Meta:
        ordering = ["vmid"]
        verbose_name = "VM"

    def __str__(self) -> str:
        name = self.config.get("name") if isinstance(self.config, dict) else None
        return f"{self.vmid} ({name})" if name else str(self.vmid)

    @classmethod
    def describe(cls, pk: Any) -> str:
        return f"VM {pk}"

    @property
    def config_path(self) -> str:
        return f"nodes/{self.node_id}/qemu-server/{self.vmid}.conf"

    def full_config(self) -> dict[str, str]:
        """The config as the file holds it: the replicated entries plus ``lock`` when set."""
        return {**self.config, "lock": self.lock} if self.lock else dict(self.config)

    def config_text(self) -> str:
        """The config file as Proxmox writes it, snapshot sections included."""
        return format_config_file(self.full_config(), self.snapshots or {})

    @property
    def digest(self) -> str:
        """SHA-1 of the whole config file, Proxmox's optimistic-concurrency token."""
        return hashlib.sha1(self.config_text().encode("utf-8")).hexdigest()


class BackupJob(ReplicatedModel):
    """A scheduled backup job: one ``vzdump: <id>`` section of ``jobs.cfg`` (run by every node for its VMs)."""

    jobid = models.CharField(max_length=64, primary_key=True)
    schedule = models.CharField(max_length=128, help_text="A calendar event (vms.jobs.calendar).")
    enabled = models.BooleanField(default=True)
    repeat_missed = models.BooleanField(default=False, help_text="Run once after a downtime that missed a slot.")
    node = models.CharField(max_length=63, blank=True, default="", help_text="Only this node runs it; empty: all.")
    comment = models.CharField(max_length=512, blank=True, default="")
    options = models.JSONField(default=dict, blank=True, help_text="The vzdump options (vmid, all, storage ...).")

    class Meta:
        ordering = ["jobid"]
        verbose_name = "backup job"

    def __str__(self) -> str:
        return self.jobid

    @classmethod
    def describe(cls, pk: Any) -> str:
        return f"backup job {pk}"


class BackupJobRun(models.Model):
    """Node-local (``default`` database): how far this node has handled a job's schedule.

    Slots up to ``handled_until`` are done (run, or skipped as missed); a tick moves it forward
    only from the value it read, so two ticks never handle the same slot.
    """

    jobid = models.CharField(max_length=64, primary_key=True)
    handled_until = models.BigIntegerField(help_text="Epoch seconds.")
    last_slot = models.BigIntegerField(null=True, blank=True, help_text="The slot of the last run started.")
    last_upid = models.CharField(max_length=255, blank=True, default="")

    def __str__(self) -> str:
        return f"{self.jobid} until {self.handled_until}"
