"""Reads the edges share: a VM by its VMID (on its node), and the next free VMID."""

from __future__ import annotations

from django.conf import settings

from cluster.models import ClusterSettings
from replicator.exceptions import ConflictError
from vms.exceptions import VMNotFound
from vms.models import VM

DEFAULT_NEXTID_LOWER = 100
DEFAULT_NEXTID_UPPER = 1_000_000


def get_vm(vmid: int, node: str | None = None) -> VM:
    """The VM ``vmid``; with ``node``, only if that node owns it (as the API path requires)."""
    vm = VM.objects.filter(vmid=vmid).first()
    if vm is None or (node is not None and vm.node_id != node):
        raise VMNotFound(vmid, node or settings.PVE_NODE_NAME)
    return vm


def nextid_range() -> tuple[int, int]:
    """``next-id: lower=..,upper=..`` from datacenter.cfg, else Proxmox's defaults."""
    row = ClusterSettings.objects.filter(id="datacenter").first()
    raw = str(row.options.get("next-id", "")) if row is not None else ""
    bounds = {"lower": DEFAULT_NEXTID_LOWER, "upper": DEFAULT_NEXTID_UPPER}
    for item in filter(None, raw.split(",")):
        key, _, value = item.partition("=")
        if key in bounds and value.isdigit():
            bounds[key] = int(value)
    return bounds["lower"], bounds["upper"]


def next_free_vmid() -> int:
    """The first unused VMID in the configured range."""
    lower, upper = nextid_range()
    used = set(VM.objects.filter(vmid__gte=lower, vmid__lt=upper).values_list("vmid", flat=True))
    candidate = lower
    while candidate in used:
        candidate += 1
    if candidate >= upper:
        raise ConflictError("unable to get any free VMID in range")
    return candidate
