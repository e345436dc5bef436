"""Volume names of directory-like storages, parsed strictly (Proxmox's ``Plugin::parse_volname``).

A volume name is the part of a volume id after ``<storage>:``. Only names Proxmox itself would
write are accepted: ``<vmid>/<image>``, a linked clone ``<basevmid>/<base image>/<vmid>/<image>``,
``iso/<file>``, ``vztmpl/<file>``, ``backup/<file>``, ``snippets/<file>``, ``import/<file>``.
File names never contain ``/``, whitespace or control characters and never start with a dot, so
no name can climb out of its content directory even before the realpath check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vms.property_strings import shown

IMAGE_FORMATS = ("raw", "qcow2", "vmdk")
_FILE = r"[A-Za-z0-9_+=-][A-Za-z0-9_+=.-]*"  # a safe file name, never '.', '..' or hidden
_IMAGE = rf"({_FILE})\.(raw|qcow2|vmdk)"
_IMAGE_RE = re.compile(rf"(\d+)/{_IMAGE}")
_LINKED_RE = re.compile(rf"(\d+)/{_FILE}\.(?:raw|qcow2|vmdk)/(\d+)/{_IMAGE}")
_OWNED_RE = re.compile(r"(?:vm|base)-(\d+)-.+")
_BACKUP_OWNER_RE = re.compile(r"vzdump-(?:openvz|lxc|qemu)-(\d+)-.+")
# Content type -> (file name pattern, format of the file).
_FILE_RES: dict[str, tuple[re.Pattern[str], str | None]] = {
    "iso": (re.compile(rf"{_FILE}\.(?:iso|img)", re.IGNORECASE), "raw"),
    "vztmpl": (re.compile(rf"{_FILE}\.(?:tar|tar\.(?:gz|xz|zst|bz2))", re.IGNORECASE), "raw"),
    "backup": (re.compile(rf"{_FILE}\.(?:tgz|(?:tar|vma)(?:\.(?:gz|lzo|zst|bz2))?)"), "raw"),
    "snippets": (re.compile(_FILE), "raw"),
    "import": (re.compile(rf"{_FILE}\.(ova|ovf|qcow2|raw|vmdk)"), None),
}
FILE_RE = re.compile(_FILE)


class VolumeNameError(ValueError):
    """A volume name no storage of this kind would write."""


@dataclass(frozen=True)
class VolumeName:
    """A parsed volume name: its content type, file name, owner VMID and format."""

    kind: str
    name: str
    vmid: int | None
    format: str
    base: str | None = None  # ``<basevmid>/<base image>`` of a linked clone

    @property
    def is_base(self) -> bool:
        return self.name.startswith("base-")

    @property
    def volname(self) -> str:
        if self.kind != "images":
            return f"{self.kind}/{self.name}"
        prefix = f"{self.base}/" if self.base else ""
        return f"{prefix}{self.vmid}/{self.name}"


def parse_volname(volname: str) -> VolumeName:
    """The parts of ``volname``; VolumeNameError for anything else (``..``, absolute, odd characters)."""
    if not isinstance(volname, str) or not volname or len(volname) > 1024:
        raise VolumeNameError("invalid volume name")
    match = _LINKED_RE.fullmatch(volname)
    if match:
        base = volname.rsplit("/", 2)[0]
        return VolumeName("images", f"{match.group(3)}.{match.group(4)}", int(match.group(2)), match.group(4), base)
    match = _IMAGE_RE.fullmatch(volname)
    if match:
        return VolumeName("images", f"{match.group(2)}.{match.group(3)}", int(match.group(1)), match.group(3))
    owned = _OWNED_RE.fullmatch(volname)
    if owned and _IMAGE_RE.fullmatch(f"{owned.group(1)}/{volname}"):
        return parse_volname(f"{owned.group(1)}/{volname}")  # ``vm-100-disk-0.raw``: the owner's directory
    kind, _, name = volname.partition("/")
    if kind in _FILE_RES:
        pattern, fmt = _FILE_RES[kind]
        match = pattern.fullmatch(name)
        if match:
            owner = _BACKUP_OWNER_RE.fullmatch(name) if kind == "backup" else None
            return VolumeName(kind, name, int(owner.group(1)) if owner else None, fmt or match.group(1))
    raise VolumeNameError(f"unable to parse directory volume name '{shown(volname)}'")


def disk_name(vmid: int, index: int, fmt: str) -> str:
    return f"vm-{vmid}-disk-{index}.{fmt}"


def format_size(size: int) -> str:
    """Proxmox's ``format_size``: bytes as the largest exact unit (``4G``, ``512M``, ``1K``, ``1000``)."""
    for unit in ("T", "G", "M", "K"):
        factor = 1024 ** ("KMGT".index(unit) + 1)
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def parse_size(text: str, *, default_unit: str = "") -> int:
    """``<number>[KMGT]`` in bytes (``default_unit`` when no unit is given); ValueError otherwise."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", str(text))
    if not match:
        raise ValueError(f"unable to parse size '{shown(str(text))}'")
    unit = match.group(2) or default_unit
    factor = 1024 ** ("KMGT".index(unit) + 1) if unit else 1
    return int(float(match.group(1)) * factor)
