"""State volumes: where a running VM's RAM and device state is saved (a snapshot with ``vmstate``,
``suspend --todisk``), as qemu-server's ``find_vmstate_storage`` and ``__snapshot_save_vmstate``."""

from __future__ import annotations

from vms import devices, permissions
from vms.exceptions import StorageError
from vms.models import Storage
from vms.storage import VolumeError, resolve, volumes

MIB = 1024 * 1024
STATE_EXTRA = 500 * MIB  # device state beyond the RAM (qemu-server reserves as much)


def drive_volumes(config: dict[str, str]) -> list[tuple[str, str]]:
    """``(key, volid)`` of each drive holding a storage volume (CD-ROMs and ``unusedN`` left out)."""
    found = []
    for key in sorted(config):
        if permissions.key_class(key) != "drive":
            continue
        try:
            drive = devices.parse_drive(config[key])
        except ValueError:
            continue
        volume = drive.volume
        if drive.is_cdrom or volume.storage is None or volume.kind in ("new", "cloudinit", "none", "cdrom", "path"):
            continue
        found.append((key, volume.text))
    return found


def vmstate_storage(config: dict[str, str]) -> Storage:
    """qemu-server's ``find_vmstate_storage``: the config's ``vmstatestorage``, else a shared storage
    of the VM's disks, else a local one, else ``local``."""
    if config.get("vmstatestorage"):
        chosen = Storage.objects.filter(storeid=config["vmstatestorage"]).first()
        if chosen is None:
            raise StorageError(f"storage '{config['vmstatestorage']}' does not exist")
        return chosen
    shared = local = None
    for _key, volid in drive_volumes(config):
        try:
            storage = resolve(volid)[0]
        except VolumeError:
            continue
        if storage.shared:
            shared = shared or storage
        else:
            local = local or storage
    chosen = shared or local or Storage.objects.filter(storeid="local").first()
    if chosen is None:
        raise StorageError("no storage for the VM state found")
    return chosen


def state_size(config: dict[str, str]) -> int:
    """Bytes a state volume gets: twice the RAM plus room for the devices, as qemu-server allocates."""
    memory = str(config.get("memory", "512")).removeprefix("current=")
    return (int(memory) if memory.isdigit() else 512) * MIB * 2 + STATE_EXTRA


def alloc_state_volume(storage: Storage, vmid: int, config: dict[str, str], label: str) -> str:
    """A new raw state volume ``vm-<vmid>-state-<label>`` (a free ``-<n>`` suffix if that name is taken)."""
    size = state_size(config)
    for attempt in range(100):
        name = f"vm-{vmid}-state-{label}{f'-{attempt}' if attempt else ''}.raw"
        try:
            return volumes.alloc_volume(storage, vmid, size, fmt="raw", name=name)
        except StorageError as exc:
            if "already exists" not in str(exc):
                raise
    raise StorageError(f"unable to allocate a state volume for VM {vmid}: every name is taken")
