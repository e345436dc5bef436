"""The qemu-server options this implementation knows, with their types (a subset of Proxmox's schema)."""

from __future__ import annotations

import re
from dataclasses import dataclass

OSTYPES = ("other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24", "l26", "solaris")
SCSIHW = ("lsi", "lsi53c810", "virtio-scsi-pci", "virtio-scsi-single", "megasas", "pvscsi")
LOCKS = ("backup", "clone", "create", "migrate", "rollback", "snapshot", "snapshot-delete", "suspending", "suspended")
NIC_MODELS = (
    "e1000",
    "e1000e",
    "virtio",
    "rtl8139",
    "vmxnet3",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
)


@dataclass(frozen=True)
class Option:
    """Type of one option: ``kind`` is integer, number, boolean, enum, string, dns-name, tags, disk, net, memory."""

    kind: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    max_length: int = 4096


SCHEMA: dict[str, Option] = {
    "name": Option("dns-name", max_length=253),
    "memory": Option("memory", 16, 4 * 1024 * 1024),
    "balloon": Option("integer", 0, 4 * 1024 * 1024),
    "shares": Option("integer", 0, 50000),
    "cores": Option("integer", 1, 1024),
    "sockets": Option("integer", 1, 16),
    "vcpus": Option("integer", 1, 16384),
    "cpu": Option("string", max_length=1024),
    "cpulimit": Option("number", 0, 128),
    "cpuunits": Option("integer", 1, 262144),
    "numa": Option("boolean"),
    "ostype": Option("enum", choices=OSTYPES),
    "description": Option("description", max_length=8 * 1024),
    "tags": Option("tags", max_length=1024),
    "onboot": Option("boolean"),
    "boot": Option("string", max_length=1024),
    "bios": Option("enum", choices=("seabios", "ovmf")),
    "machine": Option("string", max_length=256),
    "agent": Option("string", max_length=256),
    "args": Option("string", max_length=8192),
    "kvm": Option("boolean"),
    "acpi": Option("boolean"),
    "tablet": Option("boolean"),
    "protection": Option("boolean"),
    "template": Option("boolean"),
    "scsihw": Option("enum", choices=SCSIHW),
    "vga": Option("string", max_length=256),
    "hotplug": Option("string", max_length=256),
    "startup": Option("string", max_length=256),
    "hookscript": Option("string", max_length=1024),
    "smbios1": Option("string", max_length=1024),
    "vmgenid": Option("string", max_length=64),
    "meta": Option("string", max_length=1024),
    "lock": Option("enum", choices=LOCKS),
    "efidisk0": Option("disk"),
    "tpmstate0": Option("disk"),
}
for _prefix, _count in (("ide", 4), ("sata", 6), ("scsi", 31), ("virtio", 16)):
    for _i in range(_count):
        SCHEMA[f"{_prefix}{_i}"] = Option("disk")
for _i in range(256):
    SCHEMA[f"unused{_i}"] = Option("disk")
for _i in range(32):
    SCHEMA[f"net{_i}"] = Option("net")
for _i in range(4):
    SCHEMA[f"serial{_i}"] = Option("string", max_length=256)

DISK_KEY_RE = re.compile(r"^(ide|sata|scsi|virtio)\d+$|^efidisk0$|^tpmstate0$")
