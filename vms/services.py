"""VM configuration services: create, update, destroy, look up; every write replicated."""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterable, Mapping

from django.conf import settings
from django.db import transaction

from cluster.models import ClusterSettings, Node
from cluster.services import log_cluster_message
from replicator.exceptions import ConflictError
from vms import config as vmconfig
from vms.exceptions import DigestMismatch, VMLocked, VMNotFound
from vms.models import VM

DEFAULT_NEXTID_LOWER = 100
DEFAULT_NEXTID_UPPER = 1_000_000


def get_vm(vmid: int, node: str | None = None) -> VM:
    """The VM ``vmid``; with ``node``, only if that node owns it (as the API path requires)."""
    vm = VM.objects.filter(vmid=vmid).first()
    if vm is None or (node is not None and vm.node_id != node):
        raise VMNotFound(vmid, node or settings.PVE_NODE_NAME)
    return vm


def create_vm(vmid: object, options: Mapping[str, object], *, node: str, actor: str) -> VM:
    """Validate and store a new VM config owned by ``node``; refuses an id used anywhere."""
    checked_vmid = vmconfig.validate_vmid(vmid)
    config = vmconfig.validate_options(options, creating=True)
    if VM.objects.filter(vmid=checked_vmid).exists():
        raise ConflictError(f"VM {checked_vmid} already exists")
    if not Node.objects.filter(name=node).exists():
        raise VMNotFound(checked_vmid, node)
    rng = random.Random(secrets.randbits(64))
    config = vmconfig.normalise_for_create(checked_vmid, dict(config), rng=rng)
    vm = VM(vmid=checked_vmid, node_id=node, config=config)
    with transaction.atomic(using="cluster"):
        vm.save()
        log_cluster_message(f"VM {checked_vmid} created on {node}", user=actor, tag="qmcreate")
    return vm


def update_vm_config(
    vm: VM,
    *,
    set_: Mapping[str, object],
    delete: Iterable[str] | str | None = None,
    digest: str | None = None,
    skiplock: bool = False,
) -> VM:
    """Apply a config update; ``digest`` guards against concurrent edits as in Proxmox."""
    if digest is not None and digest != vm.digest:
        raise DigestMismatch()
    if vm.lock and not skiplock:
        raise VMLocked(vm.vmid, vm.lock)
    updates = vmconfig.validate_options(set_, creating=False)
    config = vmconfig.apply_update(vm.config, updates, delete)
    vm.config = vmconfig.normalise_devices(vm.vmid, config, rng=random.Random(secrets.randbits(64)))
    vm.save()
    return vm


def destroy_vm(vm: VM, *, actor: str, skiplock: bool = False) -> None:
    """Remove the VM config (disks are not touched yet: storage comes with the hypervisor)."""
    if vm.lock and not skiplock:
        raise VMLocked(vm.vmid, vm.lock)
    with transaction.atomic(using="cluster"):
        vm.delete()
        log_cluster_message(f"VM {vm.vmid} destroyed", user=actor, tag="qmdestroy")


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
