"""Storage volumes on this node: where a volume id lives on disk, in which format, through which plugin.

The one place a ``<storage>:<volume>`` id becomes a host path. The id is parsed strictly (the
drive syntax by ``vms.devices.parse_volume``, the name by ``vms.storage.volnames``) and the path
resolved inside the storage's content directory, so no id can name a file outside it. Plugins
(``vms.storage.plugins``: ``dir``; ``vms.storage.btrfs``) lay volumes out as Proxmox's do; the
operations on them (allocate, free, list, resize, convert, status) are in ``vms.storage.volumes``.
"""

from __future__ import annotations

from django.conf import settings

from vms.devices import parse_volume
from vms.exceptions import StorageError
from vms.models import Storage
from vms.property_strings import shown
from vms.storage.btrfs import BtrfsPlugin
from vms.storage.plugins import CONTENT_DIRS, DirPlugin
from vms.storage.volnames import VolumeName, VolumeNameError, parse_volname

PLUGINS: dict[str, type[DirPlugin]] = {"dir": DirPlugin, "btrfs": BtrfsPlugin}
# File extension -> QEMU block format.
FORMATS = {".qcow2": "qcow2", ".raw": "raw", ".img": "raw", ".iso": "raw", ".vmdk": "vmdk"}

__all__ = [
    "CONTENT_DIRS",
    "PLUGINS",
    "VolumeError",
    "plugin_for",
    "resolve",
    "storage_of",
    "volume_format",
    "volume_path",
]


class VolumeError(ValueError):
    """A volume id that does not name a volume of a known storage on this node."""


def plugin_for(storage: Storage) -> DirPlugin:
    plugin = PLUGINS.get(storage.type)
    if plugin is None:
        raise StorageError(f"storage '{storage.storeid}' has an unknown type '{shown(storage.type)}'")
    return plugin(storage)


def storage_of(volid: str) -> Storage:
    try:
        volume = parse_volume(volid)
    except ValueError as exc:
        raise VolumeError(str(exc)) from None
    if volume.storage is None:
        raise VolumeError(f"'{shown(volid)}' is not a storage volume")
    storage = Storage.objects.filter(storeid=volume.storage).first()
    if storage is None:
        raise VolumeError(f"storage '{shown(volume.storage)}' does not exist")
    return storage


def resolve(volid: str) -> tuple[Storage, DirPlugin, VolumeName]:
    """The storage, plugin and parsed name of an allocated volume; VolumeError for anything else."""
    if not isinstance(volid, str) or ":" not in volid:
        raise VolumeError(f"'{shown(str(volid))}' is not a volume id (<storage>:<volume>)")
    storage = storage_of(volid)
    try:
        volume = parse_volname(volid.partition(":")[2])
    except VolumeNameError as exc:
        raise VolumeError(str(exc)) from None
    return storage, plugin_for(storage), volume


def check_available(storage: Storage, node: str | None = None) -> None:
    """Proxmox's ``storage_check_enabled``: not disabled, and configured for ``node`` (this node)."""
    node = node or settings.PVE_NODE_NAME
    if storage.disable:
        raise StorageError(f"storage '{storage.storeid}' is disabled")
    if storage.nodes and node not in storage.nodes.split(","):
        raise StorageError(f"storage '{storage.storeid}' is not available on node '{node}'")


def volume_path(volid: str) -> str:
    """The host path of ``volid``; VolumeError for anything that would resolve outside its storage."""
    _, plugin, volume = resolve(volid)
    try:
        return plugin.path(volume)
    except StorageError as exc:
        raise VolumeError(str(exc)) from None


def volume_format(volid: str) -> str:
    """The QEMU block format of ``volid``, from its name as Proxmox names volumes."""
    try:
        volume = parse_volname(volid.partition(":")[2])
    except VolumeNameError:
        volume = None
    if volume is not None and volume.format in ("raw", "qcow2", "vmdk"):
        return volume.format
    suffix = "." + volid.rpartition(".")[2].lower() if "." in volid else ""
    if suffix not in FORMATS:
        raise VolumeError(f"unknown format of volume '{shown(volid)}'")
    return FORMATS[suffix]
