"""What migrating a VM involves: its volumes (local or shared), its local devices, the nodes it may go to.

``GET {vm}/migrate`` answers from here (qemu-server's ``migrate_vm_precondition``) and the
migration task plans from the same scan (qemu-server's ``foreach_volid`` over the config and its
snapshots, then ``check_local_resources`` and ``check_local_storage_availability``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cluster.models import Node
from vms import devices, permissions
from vms.models import VM, Storage
from vms.property_strings import property_string_parse
from vms.runtime_paths import vm_pid
from vms.storage.volnames import parse_size

# Volume kinds that are files of a storage (not a new-disk request, an empty drive or a host path).
STORAGE_KINDS = ("images", "iso", "vztmpl", "backup", "snippets", "rootdir", "unknown")


@dataclass
class VolumeUse:
    """One volume the VM names, with qemu-server's attributes (``drivename``, ``is_unused``, ``cdrom`` ...)."""

    volid: str
    storage: str
    owner: int | None
    attrs: dict[str, Any] = field(default_factory=dict)

    def answer(self) -> dict[str, Any]:
        return {"volid": self.volid, **self.attrs}


def _note(found: dict[str, VolumeUse], key: str, value: str, snapname: str | None) -> None:
    kind = permissions.key_class(key)
    if kind not in ("drive", "unused") and key != "vmstate":
        return
    try:
        drive = devices.parse_drive(value)
    except ValueError:
        return
    volume = drive.volume
    if volume.storage is None or volume.kind not in STORAGE_KINDS:
        return
    use = found.setdefault(volume.text, VolumeUse(volume.text, volume.storage, volume.owner))
    attrs = use.attrs
    if snapname is not None:
        attrs.setdefault("referenced_in_snapshot", {})[snapname] = 1
    else:
        attrs["referenced_in_config"] = 1
    if key == "vmstate":
        attrs["is_vmstate"] = 1
    elif kind == "unused":
        attrs["is_unused"] = 1
    else:
        attrs.setdefault("drivename", key)
        if drive.is_cdrom:
            attrs["cdrom"] = 1
        items = property_string_parse(value, default_key="file")
        if items.get("shared") == "1":
            attrs["shared"] = 1
        if "size" in items and "size" not in attrs:
            with contextlib.suppress(ValueError):
                attrs["size"] = parse_size(items["size"])


def volume_uses(vm: VM) -> list[VolumeUse]:
    """Every storage volume the config and its snapshots name, each once, in the config's key order."""
    found: dict[str, VolumeUse] = {}
    for key, value in sorted(vm.config.items()):
        _note(found, key, value, None)
    for snapname, snapshot in sorted((vm.snapshots or {}).items()):
        for key, value in sorted(snapshot.items()):
            _note(found, key, value, snapname)
    return list(found.values())


def is_local(use: VolumeUse, storages: Mapping[str, Storage]) -> bool:
    """A volume that is not on a ``shared`` storage (nor a drive marked ``shared=1`` by hand)."""
    storage = storages.get(use.storage)
    return not (storage is not None and storage.shared) and not use.attrs.get("shared")


def local_resources(config: Mapping[str, str]) -> list[str]:
    """Host devices bound to this node: PCI and USB passthrough (USB spice redirection aside), serial devices."""
    found = []
    for key, value in sorted(config.items()):
        kind = permissions.key_class(key)
        spice = kind == "usb" and property_string_parse(value, default_key="host").get("host") == "spice"
        if (kind in ("hostpci", "usb") and not spice) or (kind == "serial" and value != "socket"):
            found.append(key)
    return found


def unavailable_storages(uses: list[VolumeUse], storages: Mapping[str, Storage], node: str) -> list[str]:
    """The VM's storages ``node`` does not have (restricted to other nodes, disabled, or gone)."""
    missing = []
    for use in uses:
        storage = storages.get(use.storage)
        gone = storage is None or storage.disable or (storage.nodes and node not in storage.nodes.split(","))
        if gone and use.storage not in missing:
            missing.append(use.storage)
    return sorted(missing)


def precheck(vm: VM) -> dict[str, Any]:
    """``GET {vm}/migrate``: ``running``, ``allowed_nodes``, ``not_allowed_nodes`` (with the storages each
    lacks), ``local_disks`` and ``local_resources``, as Proxmox answers it on the VM's node."""
    storages = {storage.storeid: storage for storage in Storage.objects.all()}
    uses = volume_uses(vm)
    allowed, not_allowed = [], {}
    for node in Node.objects.exclude(name=vm.node_id).order_by("name"):
        missing = unavailable_storages(uses, storages, node.name)
        if missing:
            not_allowed[node.name] = {"unavailable_storages": missing}
        else:
            allowed.append(node.name)
    local = [use.answer() for use in uses if is_local(use, storages)]
    return {
        "running": int(vm_pid(vm.vmid) is not None),
        "allowed_nodes": allowed,
        "not_allowed_nodes": not_allowed,
        "local_disks": local,
        "local_resources": local_resources(vm.config),
    }
