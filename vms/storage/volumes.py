"""Operations on the volumes of this node's storages: allocate, free, size, resize, convert, list, status.

Node-local: they act on the files of this node (a ``shared`` storage's files are the same on
every node). Authorisation is the caller's business (the API checks Proxmox's privileges; the
CLIs act as root@pam); every argument is parsed strictly here all the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vms.exceptions import StorageError
from vms.models import Storage
from vms.property_strings import shown
from vms.storage import VolumeError, check_available, plugin_for, resolve
from vms.storage.plugins import DirPlugin
from vms.storage.volnames import VolumeName, format_size

Progress = Callable[[str], None]


def enabled_plugin(storage: Storage, node: str | None = None) -> DirPlugin:
    """The storage's plugin once it is enabled on ``node`` and online."""
    check_available(storage, node)
    plugin = plugin_for(storage)
    plugin.check_active()
    return plugin


def storage_formats(storage: Storage) -> tuple[str, tuple[str, ...]]:
    """The default image format (the storage's ``format`` or the plugin's) and the supported ones."""
    plugin = plugin_for(storage)
    return (storage.format or plugin.default_format), plugin.formats


def alloc_volume(storage: Storage, vmid: int, size: int, *, fmt: str | None = None, name: str | None = None) -> str:
    """A new image of ``size`` bytes for ``vmid``; its volume id. ``images`` must be a content of the storage."""
    if "images" not in storage.content.split(","):
        raise StorageError(f"storage '{storage.storeid}' does not support vm images")
    if size <= 0:
        raise StorageError(f"invalid size {size} for a new volume")
    plugin = enabled_plugin(storage)
    default, supported = storage_formats(storage)
    fmt = fmt or default
    if fmt not in supported:
        raise StorageError(f"unsupported format '{shown(fmt)}' on storage '{storage.storeid}'")
    return f"{storage.storeid}:{plugin.alloc_image(vmid, fmt, name, size)}"


def free_volume(volid: str) -> None:
    """Remove a volume (and, on btrfs, its snapshots); a volume already gone is not an error."""
    storage, plugin, volume = resolve(volid)
    check_available(storage)
    plugin.free_image(volume)


def volume_info(volid: str) -> dict[str, Any]:
    """``path``, ``size``, ``used``, ``format`` (and ``parent``) of an existing volume."""
    storage, plugin, volume = resolve(volid)
    check_available(storage)
    path = plugin.path(volume)
    try:
        info = plugin.size_info(volume)
    except FileNotFoundError:
        raise StorageError(f"volume '{shown(volid)}' does not exist") from None
    return {"path": path, **info}


def volume_size(volid: str) -> int:
    return int(volume_info(volid)["size"])


def resize_volume(volid: str, new_size_bytes: int, *, running: bool = False) -> None:
    """Grow an image to ``new_size_bytes``; for a ``running`` VM only what the storage must do before
    QEMU's ``block_resize`` (nothing for image files: QEMU grows them)."""
    storage, plugin, volume = resolve(volid)
    check_available(storage)
    if volume.kind != "images":
        raise StorageError(f"volume '{shown(volid)}' is not a disk image")
    current = int(plugin.size_info(volume)["size"])
    if new_size_bytes < current:
        raise StorageError("shrinking disks is not supported")
    if new_size_bytes > current:
        plugin.resize(volume, new_size_bytes, running=running)


def convert_volume(
    volid: str,
    target: Storage,
    vmid: int,
    *,
    fmt: str | None = None,
    progress: Progress | None = None,
    rate_limit: int | None = None,
    snapshot: str | None = None,
) -> str:
    """A copy of ``volid`` on ``target`` (``qemu-img convert``, format ``fmt``); the new volume id.

    The target is allocated first (Proxmox's name picking), then filled; on failure it is freed.
    ``snapshot``: the volume as that snapshot of it holds it.
    """
    from vms.storage import qemu_img

    storage, plugin, volume = resolve(volid)
    check_available(storage)
    info = plugin.size_info(volume)
    new_volid = alloc_volume(target, vmid, int(info["size"]), fmt=fmt)
    try:
        _, target_plugin, new_volume = resolve(new_volid)
        if progress:
            progress(f"copying {volid} ({format_size(int(info['size']))}) to {new_volid}")
        internal = snapshot if plugin.internal_snapshots else None  # else the snapshot has a path of its own
        qemu_img.convert(
            plugin.path(volume, None if internal else snapshot),
            volume.format,
            target_plugin.path(new_volume),
            new_volume.format,
            progress=progress,
            rate_limit=rate_limit,
            snapshot=internal,
        )
    except BaseException:
        free_volume(new_volid)
        raise
    return new_volid


def create_base(volid: str) -> str:
    """A template's base volume made of ``volid`` (renamed ``base-...``, read-only); its new volume id."""
    storage, plugin, volume = resolve(volid)
    check_available(storage)
    return f"{storage.storeid}:{plugin.create_base(volume)}"


def linked_clones_of(volid: str) -> list[str]:
    """The linked clones made of the base volume ``volid`` (Proxmox's ``volume_is_base_and_used``); none for others."""
    storage, plugin, volume = resolve(volid)
    check_available(storage)
    if volume.kind != "images" or not volume.is_base:
        return []
    return [f"{storage.storeid}:{name}" for name in plugin.linked_clones(volume)]


def linked_clone(volid: str, vmid: int) -> str:
    """A linked clone of the base volume ``volid`` for ``vmid`` on the same storage; its volume id."""
    storage, plugin, volume = resolve(volid)
    check_available(storage)
    return f"{storage.storeid}:{plugin.clone_image(volume, vmid)}"


def snapshot_volume(volid: str, snap: str, action: str = "create") -> None:
    """A volume snapshot: ``create``, ``delete`` or ``rollback`` (qcow2 internal, btrfs subvolume)."""
    storage, plugin, volume = resolve(volid)
    check_available(storage)
    {"create": plugin.snapshot, "delete": plugin.snapshot_delete, "rollback": plugin.snapshot_rollback}[action](
        volume, snap
    )


def list_volumes(storage: Storage, *, content: str | None = None, vmid: int | None = None) -> list[dict[str, Any]]:
    """The volumes of ``storage``, of one content type (or all it holds), of one VM (or all)."""
    plugin = enabled_plugin(storage)
    kinds = [k for k in storage.content.split(",") if k and k != "none"]
    if content is not None:
        kinds = [content] if content in kinds else []
    return plugin.list_volumes(kinds, vmid)


def storage_status(storage: Storage, node: str | None = None) -> dict[str, Any]:
    """Proxmox's status entry: type, content, shared, enabled, active, total/used/avail."""
    entry: dict[str, Any] = {
        "type": storage.type,
        "content": storage.content,
        "shared": int(storage.shared),
        "enabled": int(not storage.disable),
        "active": 0,
        "total": 0,
        "used": 0,
        "avail": 0,
    }
    if storage.disable:
        return entry
    try:
        plugin = enabled_plugin(storage, node)
        entry.update(plugin.status(), active=1)
    except (StorageError, OSError):
        pass
    return entry


def owned_volume(volid: str, vmid: int) -> VolumeName | None:
    """The parsed name when ``volid`` is an image owned by ``vmid`` (a linked clone owns its image, not its base)."""
    try:
        _, _, volume = resolve(volid)
    except (VolumeError, StorageError):
        return None
    return volume if volume.kind == "images" and volume.vmid == vmid else None
