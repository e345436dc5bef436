"""Replicated VM and storage models."""

from __future__ import annotations

from typing import Any

from django.db import models

from authz.models import Pool
from cluster.models import Node
from replicator.models import ReplicatedModel


class Storage(ReplicatedModel):
    """A storage definition (``storage.cfg``); only the ``dir`` type for now."""

    storeid = models.CharField(max_length=64, primary_key=True)
    type = models.CharField(max_length=16, choices=[("dir", "Directory")], default="dir")
    path = models.CharField(max_length=4096)
    content = models.CharField(max_length=255, default="images", help_text="Comma-separated content types.")
    shared = models.BooleanField(default=False)
    nodes = models.CharField(max_length=4096, blank=True, default="", help_text="Comma-separated; empty means all.")
    disable = models.BooleanField(default=False)
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

    def config_text(self) -> str:
        """The config file as Proxmox writes it (the ``lock`` included)."""
        from vms.config import format_config

        config = dict(self.config)
        if self.lock:
            config["lock"] = self.lock
        return format_config(config)

    @property
    def digest(self) -> str:
        """SHA-1 of the config file, Proxmox's optimistic-concurrency token."""
        import hashlib

        return hashlib.sha1(self.config_text().encode()).hexdigest()
