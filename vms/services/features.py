"""Which of qemu-server's volume features a VM's disks allow (``GET {vm}/feature``): ``snapshot``
(every disk qcow2, or on btrfs), ``clone`` (a linked clone: a template whose disks are on dir or
btrfs storage), ``copy`` (a full clone: always, on these storages); and on which nodes (all of
them when every disk is on shared storage, else the VM's own)."""

from __future__ import annotations

from cluster.models import Node
from vms.models import VM
from vms.storage import VolumeError, resolve
from vms.storage.vmstate import drive_volumes

FEATURES = ("snapshot", "clone", "copy")


def has_feature(vm: VM, feature: str, config: dict[str, str]) -> tuple[bool, list[str]]:
    """Whether ``config`` (the VM's, or one snapshot's) allows ``feature``, and on which nodes."""
    if feature not in FEATURES:
        raise ValueError(f"unknown feature '{feature}'")
    shared, allowed = True, True
    for _key, volid in drive_volumes(config):
        try:
            storage, plugin, volume = resolve(volid)
        except VolumeError:
            return False, []
        shared = shared and storage.shared
        if feature == "snapshot":
            allowed = allowed and (plugin.type == "btrfs" or volume.format == "qcow2")
        elif feature == "clone":
            allowed = allowed and config.get("template") == "1" and plugin.type in ("dir", "btrfs")
    if feature == "clone" and config.get("template") != "1":
        allowed = False
    if not allowed:
        return False, []
    nodes = sorted(Node.objects.values_list("name", flat=True)) if shared else [vm.node_id]
    return True, nodes
