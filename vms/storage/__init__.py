"""Storage volumes on this node: where a volume id lives on disk and in which format.

The one place a ``<storage>:<volume>`` id becomes a host path. The id is parsed strictly
(``vms.devices.parse_volume``) and the path resolved inside the storage's root, so no id can name
a file outside it. Plugins (``dir`` here; the storage plugins extend this package) lay volumes
out as Proxmox's do: ``images/<vmid>/<name>``, ``template/iso/``, ``template/cache/``, ``dump/``,
``snippets/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from vms.devices import parse_volume
from vms.models import Storage
from vms.property_strings import shown

# Content type -> sub-directory of a directory storage (Proxmox's dir plugin layout).
CONTENT_DIRS = {
    "images": "images",
    "iso": "template/iso",
    "vztmpl": "template/cache",
    "backup": "dump",
    "snippets": "snippets",
    "import": "import",
}
# File extension -> QEMU block format.
FORMATS = {".qcow2": "qcow2", ".raw": "raw", ".img": "raw", ".iso": "raw", ".vmdk": "vmdk"}


class VolumeError(ValueError):
    """A volume id that does not name a volume of a known storage on this node."""


def storage_of(volid: str) -> Storage:
    volume = parse_volume(volid)
    if volume.storage is None:
        raise VolumeError(f"'{shown(volid)}' is not a storage volume")
    storage = Storage.objects.filter(storeid=volume.storage).first()
    if storage is None:
        raise VolumeError(f"storage '{shown(volume.storage)}' does not exist")
    return storage


def volume_path(volid: str) -> str:
    """The host path of ``volid``; VolumeError for anything that would resolve outside its storage."""
    volume = parse_volume(volid)
    if volume.kind in ("none", "cdrom", "new", "cloudinit", "unknown", "path") or volume.storage is None:
        raise VolumeError(f"'{shown(volid)}' is not an allocated storage volume")
    storage = storage_of(volid)
    name = volid.partition(":")[2]
    if volume.kind == "images":
        relative = name if "/" in name else f"{volume.owner}/{name}"
        base = Path(storage.path) / CONTENT_DIRS["images"]
    elif volume.kind in CONTENT_DIRS:
        relative = name.partition("/")[2]
        base = Path(storage.path) / CONTENT_DIRS[volume.kind]
    else:
        raise VolumeError(f"'{shown(volid)}' has no path on a {storage.type} storage")
    root = os.path.realpath(base)
    path = os.path.realpath(base / relative)
    if os.path.commonpath([root, path]) != root or path == root:
        raise VolumeError(f"volume '{shown(volid)}' resolves outside its storage")
    return path


def volume_format(volid: str) -> str:
    """The QEMU block format of ``volid``, from its name as Proxmox names volumes."""
    suffix = Path(volid.partition(":")[2]).suffix
    if suffix not in FORMATS:
        raise VolumeError(f"unknown format of volume '{shown(volid)}'")
    return FORMATS[suffix]
