"""The guests (VMs) a membership change must know about, handed in by the app that owns them.

Adding a node refuses VMIDs the cluster already has, deleting one saves and drops the VMs it
owns, and a joining node carries its standalone VMs into the cluster. The cluster app knows no
VM (dependencies point ``cluster <- vms``): ``vms`` registers its provider at ``ready()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Guest(Protocol):
    """One guest as a membership change handles it (a VM row)."""

    vmid: int

    def full_config(self) -> dict[str, str]:
        """The config as its file holds it."""

    def delete(self) -> Any:
        """Drop it (a replicated write: inside the membership change's atomic block)."""


class GuestProvider(Protocol):
    """What the app owning the guests implements."""

    def existing(self, vmids: list[int]) -> list[int]:
        """Those of ``vmids`` that exist in the cluster, in order."""

    def on_node(self, node: str) -> Sequence[Guest]:
        """The guests ``node`` owns, by VMID."""

    def export_all(self) -> list[dict[str, Any]]:
        """Every guest of this node's state as ``{"vmid", "config", "snapshots"}``, by VMID (a standalone node joining)."""

    def exists(self, vmid: int) -> bool:
        """Whether the cluster has a guest ``vmid``."""

    def carry_in(self, vmid: int, config: dict[str, Any], node: str, snapshots: dict[str, Any] | None = None) -> None:
        """Write a joined node's guest (with its snapshots' configs) into the cluster as ``node``'s."""


_provider: GuestProvider | None = None


def register(provider: GuestProvider) -> None:
    """Called from the guests' app ``ready()``."""
    global _provider
    _provider = provider


def provider() -> GuestProvider:
    if _provider is None:
        raise RuntimeError("no guest provider registered (the vms app registers one at ready())")
    return _provider
