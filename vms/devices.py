"""Values that reach the host: volumes, drives, host USB/PCI devices, serial ports; parsed strictly.

Pure functions (no Django). The validator uses them to refuse malformed values; ``vms.permissions``
uses the same parse to decide who may use a value (a host device or a /dev path is root@pam's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vms import config_schema as schema
from vms.property_strings import property_string_parse, shown

# qemu-server's drive_is_cloudinit: ``<storage>:cloudinit`` or a ``vm-<vmid>-cloudinit`` volume.
CLOUDINIT_RE = re.compile(r"[:/](vm-\d+-)?cloudinit(\.(raw|qcow2|vmdk))?$")
# Volume names of a directory storage (Proxmox's dir plugin) and the vm-<vmid>-... names used here.
_LINKED_RE = re.compile(r"\d+/[^/\s]+/(\d+)/[^/\s]+")  # a linked clone: ``<basevmid>/<base>/<vmid>/<image>``
_OWNED_DIR_RE = re.compile(r"(\d+)/\S+")
_OWNED_NAME_RE = re.compile(r"(?:vm|base|subvol)-(\d+)-\S+")
_BACKUP_OWNER_RE = re.compile(r"vzdump-(?:openvz|lxc|qemu)-(\d+)-.+")


@dataclass(frozen=True)
class Volume:
    """A drive's ``file``: what it names and whose it is.

    ``kind`` is ``none`` (empty drive), ``cdrom`` (the host's CD drive), ``path`` (a host path),
    ``new`` (``<storage>:<GiB>``, to be allocated), ``cloudinit``, or the content type of a storage
    volume: ``images``, ``iso``, ``vztmpl``, ``backup``, ``snippets``, ``rootdir``, ``unknown``.
    """

    text: str
    kind: str
    storage: str | None = None
    owner: int | None = None


def new_disk_size(volume: str) -> str | None:
    """The size in GiB when ``volume`` is a ``<storage>:<size>`` allocation request."""
    storage, sep, size = volume.partition(":")
    return size if sep and schema.STORAGE_RE.fullmatch(storage) and schema.NUMBER_RE.fullmatch(size) else None


def _volume_kind(name: str) -> tuple[str, int | None]:
    """Content type and owner VMID of a storage volume name (Proxmox's ``parse_volname``)."""
    for pattern in (_LINKED_RE, _OWNED_DIR_RE, _OWNED_NAME_RE):
        match = pattern.fullmatch(name)
        if match:
            return "images", int(match.group(1))
    kind, _, rest = name.partition("/")
    if kind == "rootdir" and rest.isdigit():
        return "rootdir", int(rest)
    if kind == "backup" and rest and "/" not in rest:
        owner = _BACKUP_OWNER_RE.fullmatch(rest)
        return "backup", int(owner.group(1)) if owner else None
    if kind in ("iso", "vztmpl", "snippets", "import") and rest and "/" not in rest:
        return kind, None
    return "unknown", None


def parse_volume(volume: str) -> Volume:
    """Classify a drive's (validated) volume; ValueError for what is not a volume at all."""
    if volume in ("none", "cdrom"):
        return Volume(volume, volume)
    if volume.startswith("/"):
        if not schema.DEVICE_RE.fullmatch(volume) or ".." in volume.split("/"):
            raise ValueError(f"invalid volume '{shown(volume)}' (only /dev/ paths may be passed through)")
        return Volume(volume, "path")
    storage, sep, name = volume.partition(":")
    if not sep or not schema.STORAGE_RE.fullmatch(storage):
        raise ValueError(f"invalid volume '{shown(volume)}' (expected <storage>:<volume> or <storage>:<size>)")
    if ".." in name.split("/"):
        raise ValueError("volume names may not contain '..'")
    size = new_disk_size(volume)
    if size is not None:
        if float(size) <= 0:
            raise ValueError(f"invalid size '{shown(size)}' for a new disk (GiB, more than 0)")
        return Volume(volume, "new", storage)
    if not schema.VOLNAME_RE.fullmatch(name) or name.startswith("/"):
        raise ValueError(f"invalid volume '{shown(volume)}' (expected <storage>:<volume> or <storage>:<size>)")
    if CLOUDINIT_RE.search(volume):
        return Volume(volume, "cloudinit", storage)
    kind, owner = _volume_kind(name)
    return Volume(volume, kind, storage, owner)


@dataclass(frozen=True)
class Drive:
    """A disk, CD-ROM or cloud-init drive (``scsi0``, ``ide2``, ``efidisk0``, ``unused0`` ...)."""

    volume: Volume
    media: str  # "disk", "cdrom" or "cloudinit": which VM.Config privilege it needs

    @property
    def is_cdrom(self) -> bool:
        return self.media == "cdrom"


def parse_drive(value: str) -> Drive:
    """A validated drive value; a ``cdrom`` volume or ``media=cdrom`` make it a CD-ROM drive."""
    items = property_string_parse(value, default_key="file")
    volume = parse_volume(items.get("file", ""))
    if volume.kind == "cloudinit":
        media = "cloudinit"
    elif items.get("media") == "cdrom" or volume.kind == "cdrom":
        media = "cdrom"
    else:
        media = "disk"
    return Drive(volume, media)


@dataclass(frozen=True)
class HostDevice:
    """A ``usbN`` or ``hostpciN`` device: a host device (``host``) or a cluster mapping (``mapping``)."""

    host: str | None
    mapping: str | None
    options: dict[str, str]


def _host_device(value: str, host_re: re.Pattern[str], options: dict[str, str]) -> HostDevice:
    items = property_string_parse(value, default_key="host")
    host, mapping = items.pop("host", None), items.pop("mapping", None)
    if (host is None) == (mapping is None):
        raise ValueError("either 'host' or 'mapping' must be set")
    if host is not None and not host_re.fullmatch(host):
        raise ValueError(f"invalid host device '{shown(host)}'")
    if mapping is not None and not schema.MAPPING_ID_RE.fullmatch(mapping):
        raise ValueError(f"invalid mapping id '{shown(mapping)}'")
    for key, val in items.items():
        pattern = options.get(key)
        if pattern is None:
            raise ValueError(f"invalid option '{shown(key)}'")
        if not re.fullmatch(pattern, val):
            raise ValueError(f"invalid value for option '{key}': '{shown(val)}'")
    return HostDevice(host, mapping, items)


def parse_usb(value: str) -> HostDevice:
    """qemu-server's pve-qm-usb: ``[host=]<vendor:product|bus-port|spice>`` or ``mapping=<id>``, ``usb3``."""
    return _host_device(value, schema.USB_HOST_RE, schema.USB_OPTIONS)


def parse_hostpci(value: str) -> HostDevice:
    """qemu-server's pve-qm-hostpci: ``[host=]<bus:dev.func[;...]>`` or ``mapping=<id>``, and its options."""
    return _host_device(value, schema.PCI_HOST_RE, schema.HOSTPCI_OPTIONS)


def check_serial(value: str) -> str:
    """``socket`` (a unix socket on the host), or a host device path (root@pam's)."""
    if value == "socket" or (schema.DEVICE_RE.fullmatch(value) and ".." not in value.split("/")):
        return value
    raise ValueError(f"invalid serial port '{shown(value)}' (expected 'socket' or a /dev/ path)")
