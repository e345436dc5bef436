"""The VMs as cluster membership changes see them: the ``cluster.membership.guests`` provider."""

from __future__ import annotations

from typing import Any

from vms.models import VM


class ClusterGuests:
    """VMIDs in use, a node's VMs, a joining node's VMs carried into the cluster."""

    def existing(self, vmids: list[int]) -> list[int]:
        return sorted(VM.objects.using("cluster").filter(vmid__in=vmids).values_list("vmid", flat=True))

    def on_node(self, node: str) -> list[VM]:
        return list(VM.objects.using("cluster").filter(node=node).order_by("vmid"))

    def export_all(self) -> list[dict[str, Any]]:
        return [
            {"vmid": vm.vmid, "config": vm.config, "snapshots": vm.snapshots or {}}
            for vm in VM.objects.using("cluster").order_by("vmid")
        ]

    def exists(self, vmid: int) -> bool:
        return VM.objects.using("cluster").filter(vmid=vmid).exists()

    def carry_in(self, vmid: int, config: dict[str, Any], node: str, snapshots: dict[str, Any] | None = None) -> None:
        VM(vmid=vmid, node_id=node, config=config, snapshots=snapshots or {}).save()
