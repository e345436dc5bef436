"""Replicated VM and storage models."""

from __future__ import annotations

from typing import Any

from django.db import models

from authz.models import Pool
from cluster.models import Node
from replicator.models import ReplicatedModel
from vms.config import config_digest, format_config


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
        """The config file as Proxmox writes it."""
        return format_config(self.full_config())

    @property
    def digest(self) -> str:
        """SHA-1 of the config file, Proxmox's optimistic-concurrency token."""
        return config_digest(self.full_config())
