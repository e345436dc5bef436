"""The qemu-server options this implementation knows (a subset of Proxmox's schema) and value patterns.

No Django imports: shared by the API, the admin, ``qm`` and the config-tree renderer.
"""

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
MAX_MEMORY = 4 * 1024 * 1024  # MiB
MAX_HOSTPCI = 16  # hostpci0..15, as qemu-server
MAX_USB = 14  # usb0..13, as qemu-server

# Value patterns (use with fullmatch).
INTEGER_RE = re.compile(r"-?(0|[1-9][0-9]*)")
NUMBER_RE = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
DNS_LABEL_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
TAG_RE = re.compile(r"[a-z0-9_][a-z0-9_\-+.]*", re.IGNORECASE)  # Proxmox matches tags case-insensitively
MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
STORAGE_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9\-_.]*")
VOLNAME_RE = re.compile(r"[A-Za-z0-9_.\-+/@]+")
DEVICE_RE = re.compile(r"/dev/[A-Za-z0-9_.\-/]+")
PROPERTY_KEY_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_\-]*")
CONFIGID_RE = re.compile(r"[a-z][a-z0-9_\-]*")
VMID_RE = re.compile(r"[1-9][0-9]{0,11}")
VMGENID_RE = re.compile(r"[a-fA-F0-9]{8}(-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}|[01]")
LINE_RE = re.compile(r"([a-z][a-z0-9_\-]*):[ \t]*(.*?)[ \t]*")
# What ``str.splitlines`` breaks on: a description is split on exactly these.
LINE_BREAK_RE = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# Line breaks, other C0/C1 controls, DEL, and Unicode bidi/line formatting characters.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
# Controls a description line may not hold (tab is fine; line breaks were split off already).
DESCRIPTION_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f]")


@dataclass(frozen=True)
class Option:
    """Type of one option.

    ``kind`` is one of: integer, number, boolean, enum, string, property (a property string whose
    first item may omit ``default_key``), dns-name, tags, disk, net, memory, description, unused (a
    volume detached from its drive), serial, usb, hostpci (host devices, see ``vms.devices``), vmgenid.
    """

    kind: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    max_length: int = 4096
    default_key: str | None = None


SCHEMA: dict[str, Option] = {
    "name": Option("dns-name", max_length=253),
    "memory": Option("memory", 16, MAX_MEMORY),
    "balloon": Option("integer", 0, MAX_MEMORY),
    "shares": Option("integer", 0, 50000),
    "cores": Option("integer", 1, 1024),
    "sockets": Option("integer", 1, 16),
    "vcpus": Option("integer", 1, 16384),
    "cpu": Option("property", max_length=1024, default_key="cputype"),
    "cpulimit": Option("number", 0, 128),
    "cpuunits": Option("integer", 1, 262144),
    "numa": Option("boolean"),
    "ostype": Option("enum", choices=OSTYPES),
    "description": Option("description", max_length=8 * 1024),
    "tags": Option("tags", max_length=1024),
    "onboot": Option("boolean"),
    "boot": Option("property", max_length=1024, default_key="legacy"),
    "bios": Option("enum", choices=("seabios", "ovmf")),
    "machine": Option("property", max_length=256, default_key="type"),
    "agent": Option("property", max_length=256, default_key="enabled"),
    "args": Option("string", max_length=8192),
    "kvm": Option("boolean"),
    "acpi": Option("boolean"),
    "tablet": Option("boolean"),
    "protection": Option("boolean"),
    "template": Option("boolean"),
    "scsihw": Option("enum", choices=SCSIHW),
    "vga": Option("property", max_length=256, default_key="type"),
    "hotplug": Option("string", max_length=256),
    "startup": Option("property", max_length=256),
    # Live migration: the largest pause accepted at the switch-over (seconds) and a speed cap (MiB/s, 0: none).
    "migrate_downtime": Option("number", 0, 2000),  # QEMU refuses a longer limit
    "migrate_speed": Option("integer", 0, 1024**2),
    "hookscript": Option("string", max_length=1024),
    "smbios1": Option("property", max_length=1024),
    "vmgenid": Option("vmgenid", max_length=64),
    "meta": Option("property", max_length=1024),
    "lock": Option("enum", choices=LOCKS),
    "parent": Option("string", max_length=256),
    "vmstatestorage": Option("storage", max_length=64),
    # Written by a suspend to disk (``vms.qemu.hibernate``), read by the start that resumes; never set by hand.
    "vmstate": Option("unused"),
    "runningmachine": Option("string", max_length=256),
    "runningcpu": Option("string", max_length=1024),
    "efidisk0": Option("disk"),
    "tpmstate0": Option("disk"),
    # Cloud-init (``vms.cloudinit``): read by the guest from its cloud-init drive.
    "ciuser": Option("string", max_length=256),
    "cipassword": Option("cipassword", max_length=1024),
    "citype": Option("enum", choices=("nocloud", "configdrive2", "opennebula")),
    "ciupgrade": Option("boolean"),
    "sshkeys": Option("sshkeys", max_length=16 * 1024),
    "nameserver": Option("address-list", max_length=1024),
    "searchdomain": Option("domain-list", max_length=1024),
}
for _prefix, _count in (("ide", 4), ("sata", 6), ("scsi", 31), ("virtio", 16)):
    for _i in range(_count):
        SCHEMA[f"{_prefix}{_i}"] = Option("disk")
for _i in range(256):
    SCHEMA[f"unused{_i}"] = Option("unused")
for _i in range(32):
    SCHEMA[f"net{_i}"] = Option("net")
for _i in range(32):
    SCHEMA[f"ipconfig{_i}"] = Option("ipconfig", max_length=1024)
for _i in range(4):
    SCHEMA[f"serial{_i}"] = Option("serial", max_length=256)
for _i in range(MAX_HOSTPCI):
    SCHEMA[f"hostpci{_i}"] = Option("hostpci", max_length=1024)
for _i in range(MAX_USB):
    SCHEMA[f"usb{_i}"] = Option("usb", max_length=256)

SUSPEND_KEYS = ("vmstate", "runningmachine", "runningcpu")

# Keys whose value names a volume that belongs to the VM (new ones are numbered vm-<vmid>-disk-<k>).
DISK_KEY_RE = re.compile(r"(ide|sata|scsi|virtio|unused)\d+|efidisk0|tpmstate0")

# Options a disk property string may carry after its volume (values are checked loosely, by pattern).
DISK_OPTIONS: dict[str, str] = {
    "aio": r"native|threads|io_uring",
    "backup": r"0|1",
    "cache": r"none|writethrough|writeback|unsafe|directsync",
    "discard": r"on|ignore",
    "detect_zeroes": r"on|off|unmap|0|1",
    "efitype": r"2m|4m",
    "format": r"raw|qcow2|vmdk|cloop|cow|qed|vpc",
    "iothread": r"0|1",
    "media": r"disk|cdrom",
    "model": r"[A-Za-z0-9_.\-]{1,40}",
    "pre-enrolled-keys": r"0|1",
    "replicate": r"0|1",
    "ro": r"0|1",
    "serial": r"[A-Za-z0-9_.\-]{1,60}",
    "shared": r"0|1",
    "size": r"[0-9]+(\.[0-9]+)?[KMGT]?",
    "snapshot": r"0|1",
    "ssd": r"0|1",
    "version": r"v1\.2|v2\.0",
    "werror": r"enospc|ignore|report|stop",
    "rerror": r"ignore|report|stop",
    "wwn": r"0x[0-9a-fA-F]{16}",
}
# I/O limits: mbps, mbps_rd_max, iops_wr_max_length, ...
DISK_THROTTLE_RE = re.compile(r"(mbps|iops)(_rd|_wr)?(_max)?(_length)?")

# Options of a network device after its ``model[=MAC]`` item: value pattern, and integer ranges.
NET_OPTIONS: dict[str, str] = {
    "bridge": r"[A-Za-z0-9_.\-]{1,64}",
    "firewall": r"0|1",
    "link_down": r"0|1",
    "mtu": r"0|[1-9][0-9]{0,5}",
    "queues": r"0|[1-9][0-9]{0,5}",
    "rate": r"(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?",
    "tag": r"0|[1-9][0-9]{0,5}",
    "trunks": r"[0-9]{1,4}(-[0-9]{1,4})?(;[0-9]{1,4}(-[0-9]{1,4})?)*",
}
NET_RANGES: dict[str, tuple[int, int]] = {"mtu": (1, 65520), "queues": (0, 64), "tag": (1, 4094)}

# Host devices (qemu-server's pve-qm-usb and pve-qm-hostpci formats; serial ports are ``socket`` or a /dev path).
USB_HOST_RE = re.compile(r"(0x)?[0-9A-Fa-f]{4}:(0x)?[0-9A-Fa-f]{4}|[0-9]+-[0-9]+(\.[0-9]+)*|[Ss][Pp][Ii][Cc][Ee]")
_PCI_ID = r"([a-f0-9]{4,8}:)?[a-f0-9]{2}:[a-f0-9]{2}(\.[a-f0-9])?"
PCI_HOST_RE = re.compile(rf"{_PCI_ID}(;{_PCI_ID}){{0,31}}")
MAPPING_ID_RE = re.compile(r"[a-z][a-z0-9_\-]{1,63}")
USB_OPTIONS: dict[str, str] = {"usb3": r"0|1"}
HOSTPCI_OPTIONS: dict[str, str] = {
    "device-id": r"0x[0-9a-fA-F]{4}",
    "driver": r"vfio|keep",
    "legacy-igd": r"0|1",
    "mdev": r"[A-Za-z0-9_\-]{1,64}",
    "pcie": r"0|1",
    "rombar": r"0|1",
    "romfile": r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}",  # a file name in /usr/share/kvm, never a path
    "sub-device-id": r"0x[0-9a-fA-F]{4}",
    "sub-vendor-id": r"0x[0-9a-fA-F]{4}",
    "vendor-id": r"0x[0-9a-fA-F]{4}",
    "x-vga": r"0|1",
}


def typed_value(key: str, value: str) -> str | int | float:
    """A config value as qemu-server's API returns it: JSON numbers for integer, boolean and number keys.

    Clients parse them as numbers (``onboot: 1``, ``cpuunits: 1024``); anything else, and a value
    that does not parse, stays the stored string.
    """
    option = SCHEMA.get(key)
    if option is None or option.kind not in ("integer", "boolean", "number"):
        return value
    if INTEGER_RE.fullmatch(value):
        return int(value)
    if option.kind == "number" and NUMBER_RE.fullmatch(value):
        return float(value)
    return value
