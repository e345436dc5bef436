"""Disks, CD-ROMs, the EFI vars disk and the boot order as QEMU arguments (qemu-server's layout).

Pure (no Django). Each drive is a ``-drive if=none,id=drive-<key>`` backend plus a ``-device``
front end on its bus: IDE ``ide.<n//2>``, SATA on one AHCI controller, SCSI on ``scsihw<k>``
controllers (``scsihw`` decides the model and how many disks each holds), virtio-blk on PCI.
Every option is parsed and mapped; nothing from the config reaches QEMU as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from vms import devices
from vms.property_strings import property_string_parse, shown

# volume id -> (host path, QEMU format)
Resolver = Callable[[str], tuple[str, str]]

BUSES = ("ide", "sata", "scsi", "virtio")
DRIVE_KEY_RE = re.compile(r"(ide|sata|scsi|virtio)(\d+)")
BOOTINDEX_BASE = 100  # as qemu-server: the first device of ``boot: order=`` gets bootindex 100
# Disks per SCSI controller (qemu-server's maxdev): lsi 7, megasas 16, pvscsi and virtio-scsi one bus.
SCSI_CONTROLLERS = {
    "lsi": ("lsi", 7),
    "lsi53c810": ("lsi53c810", 7),
    "megasas": ("megasas", 16),
    "pvscsi": ("pvscsi", 64),
    "virtio-scsi-pci": ("virtio-scsi-pci", 256),
    "virtio-scsi-single": ("virtio-scsi-pci", 1),
}
CACHE = {"none", "writethrough", "writeback", "unsafe", "directsync"}
# Options qemu-server accepts on a drive that change nothing on QEMU's command line here.
INERT_OPTIONS = {"backup", "replicate", "size", "shared", "format", "media", "file", "snapshot"}
SERIAL_RE = re.compile(r"[A-Za-z0-9_.\-]{1,20}")  # QEMU cuts longer serials; qemu-server allows 20


class CommandError(ValueError):
    """A config value that cannot be translated into QEMU arguments safely."""


def drive_keys(config: Mapping[str, str]) -> list[str]:
    """The drive keys of ``config`` in qemu-server's order: ide, sata, scsi, virtio, each by number."""
    keys = [k for k in config if DRIVE_KEY_RE.fullmatch(k)]
    return sorted(keys, key=lambda k: (BUSES.index(DRIVE_KEY_RE.fullmatch(k).group(1)), _index(k)))  # type: ignore[union-attr]


def _index(key: str) -> int:
    match = DRIVE_KEY_RE.fullmatch(key)
    return int(match.group(2)) if match else 0


def boot_order(config: Mapping[str, str], nets: list[str]) -> dict[str, int]:
    """``boot: order=scsi0;ide2;net0`` (or the legacy ``cdn``) as device key -> bootindex."""
    raw = config.get("boot", "")
    disks = [k for k in drive_keys(config) if not _is_cdrom(config[k])]
    cdroms = [k for k in drive_keys(config) if _is_cdrom(config[k])]
    if not raw:
        order = disks[:1] + cdroms + nets
    else:
        items = property_string_parse(raw, default_key="legacy")
        if set(items) - {"order", "legacy"}:
            raise CommandError(f"boot: unknown option '{shown(next(iter(set(items) - {'order', 'legacy'})))}'")
        if "order" in items:
            order = [device for device in items["order"].split(";") if device]
            for device in order:
                if device not in config or not (DRIVE_KEY_RE.fullmatch(device) or device.startswith("net")):
                    raise CommandError(f"boot: order names '{shown(device)}', which is not a configured device")
        else:
            legacy = items.get("legacy", "")
            if not re.fullmatch(r"[acdn]{1,4}", legacy):
                raise CommandError(f"boot: invalid legacy order '{shown(legacy)}'")
            order = []
            for letter in legacy:
                order += {"c": disks[:1], "d": cdroms, "n": nets, "a": []}[letter]
    return {device: BOOTINDEX_BASE + position for position, device in enumerate(dict.fromkeys(order))}


def _is_cdrom(value: str) -> bool:
    try:
        return devices.parse_drive(value).is_cdrom
    except ValueError:
        return False


def _drive_options(key: str, items: Mapping[str, str], *, cdrom: bool) -> list[str]:
    """``-drive`` options from the drive's cache/aio/discard/... items (the volume is done by the caller)."""
    options: list[str] = []
    for name, value in items.items():
        if name in INERT_OPTIONS or name in ("ssd", "serial", "iothread", "model", "wwn"):
            continue
        if name == "cache":
            if value not in CACHE:
                raise CommandError(f"{key}: invalid cache mode '{shown(value)}'")
            options.append(f"cache={value}")
        elif name == "aio" and value in ("native", "threads", "io_uring"):
            options.append(f"aio={value}")
        elif name == "discard" and value in ("on", "ignore") and not cdrom:
            options.append(f"discard={'unmap' if value == 'on' else 'ignore'}")
        elif name == "detect_zeroes" and value in ("on", "off", "unmap", "0", "1"):
            options.append(f"detect-zeroes={ {'1': 'on', '0': 'off'}.get(value, value) }")
        elif name == "ro" and value in ("0", "1"):
            options += ["readonly=on"] if value == "1" else []
        elif name in ("werror", "rerror") and value in ("enospc", "ignore", "report", "stop"):
            options.append(f"{name}={value}")
        elif name.startswith(("mbps", "iops")):
            options.append(_throttle(key, name, value))
        else:
            raise CommandError(f"{key}: option '{shown(name)}={shown(value)}' is not supported")
    if items.get("aio") == "native" and items.get("cache", "none") not in ("none", "directsync"):
        raise CommandError(f"{key}: aio=native needs cache=none or cache=directsync")
    return options


def _throttle(key: str, name: str, value: str) -> str:
    """``mbps_rd_max=10`` -> ``throttling.bps-read-max=10485760`` (MB/s become bytes/s)."""
    match = re.fullmatch(r"(mbps|iops)(?:_(rd|wr))?(_max)?(_length)?", name)
    if match is None or (match.group(4) and not match.group(3)):
        raise CommandError(f"{key}: option '{shown(name)}' is not supported")
    unit, direction, is_max, is_length = match.groups()
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", value) or (is_length and not value.isdigit()):
        raise CommandError(f"{key}: invalid {name} '{shown(value)}'")
    number = float(value) * (1024 * 1024 if unit == "mbps" and not is_length else 1)
    option = (
        f"throttling.{'bps' if unit == 'mbps' else 'iops'}-{ {'rd': 'read', 'wr': 'write'}.get(direction, 'total') }"
    )
    return f"{option}{'-max' if is_max else ''}{'-length' if is_length else ''}={int(number)}"


def _backend(key: str, value: str, resolve: Resolver, cloudinit_image: str) -> tuple[list[str], dict[str, str], bool]:
    """The ``-drive`` argument of one drive, its parsed items and whether it is a CD-ROM."""
    drive = devices.parse_drive(value)
    items = property_string_parse(value, default_key="file")
    volume = drive.volume
    parts = ["if=none", f"id=drive-{key}"]
    if volume.kind == "cloudinit":  # the image built from the config at start (``vms.cloudinit``)
        if not cloudinit_image:
            raise CommandError(f"{key}: no cloud-init image for this drive")
        parts = [f"file={_escape(cloudinit_image)}", *parts, "format=raw", "media=cdrom", "readonly=on"]
        return ["-drive", ",".join([*parts, *_drive_options(key, items, cdrom=True)])], items, True
    if volume.kind == "none":
        if not drive.is_cdrom:
            raise CommandError(f"{key}: only a CD-ROM drive may be empty ('none')")
    elif volume.kind == "cdrom":
        raise CommandError(f"{key}: the host's CD-ROM drive is not supported; use an ISO volume")
    elif volume.kind == "path":
        parts = [f"file={_escape(volume.text)}", *parts, "format=raw"]
    elif volume.kind == "new":
        raise CommandError(f"{key}: volume '{shown(volume.text)}' is not allocated")
    else:
        if drive.is_cdrom and volume.kind != "iso":
            raise CommandError(f"{key}: a CD-ROM must hold an ISO volume, not '{shown(volume.text)}'")
        if not drive.is_cdrom and volume.kind != "images":
            raise CommandError(f"{key}: '{shown(volume.text)}' is not a disk image volume")
        path, fmt = resolve(volume.text)
        wanted = items.get("format")
        if wanted and wanted != fmt:
            raise CommandError(f"{key}: format={shown(wanted)} does not match the volume's format {fmt}")
        parts = [f"file={_escape(path)}", *parts, f"format={fmt}"]
    if drive.is_cdrom:
        parts.append("media=cdrom")
        if volume.kind != "none":
            parts.append("readonly=on")
    parts += _drive_options(key, items, cdrom=drive.is_cdrom)
    return ["-drive", ",".join(parts)], items, drive.is_cdrom


def _escape(path: str) -> str:
    """QEMU's option syntax: a comma inside a value is written twice."""
    return path.replace(",", ",,")


def _front_end(key: str, items: Mapping[str, str], cdrom: bool, scsihw: str, q35: bool) -> tuple[list[str], str]:
    """The ``-device`` of one drive; the SCSI controller it needs (``""`` if none)."""
    bus, index = DRIVE_KEY_RE.fullmatch(key).group(1), _index(key)  # type: ignore[union-attr]
    extra: list[str] = []
    serial = items.get("serial")
    if serial is not None:
        if not SERIAL_RE.fullmatch(serial):
            raise CommandError(f"{key}: invalid serial '{shown(serial)}' (at most 20 of A-Z a-z 0-9 _ . -)")
        extra.append(f"serial={serial}")
    if items.get("ssd") == "1":
        if bus == "virtio":
            raise CommandError(f"{key}: ssd emulation is not available on virtio-blk")
        if not cdrom:
            extra.append("rotation_rate=1")
    if items.get("wwn"):
        extra.append(f"wwn={items['wwn']}")
    controller = ""
    if bus == "ide":
        per_bus = 1 if q35 else 2  # q35's AHCI has one unit per bus, i440fx's IDE two (as qemu-server)
        device = f"{'ide-cd' if cdrom else 'ide-hd'},bus=ide.{index // per_bus},unit={index % per_bus}"
    elif bus == "sata":
        device = f"{'ide-cd' if cdrom else 'ide-hd'},bus=ahci0.{index}"
    elif bus == "virtio":
        if cdrom:
            raise CommandError(f"{key}: a CD-ROM cannot be a virtio-blk device")
        device = "virtio-blk-pci"
        if items.get("iothread") == "1":
            device += f",iothread=iothread-{key}"
    else:
        model, per_controller = SCSI_CONTROLLERS[scsihw]
        if items.get("iothread") == "1" and scsihw != "virtio-scsi-single":
            raise CommandError(f"{key}: iothread on SCSI disks needs scsihw virtio-scsi-single")
        number = index // per_controller
        controller = f"virtioscsi{index}" if scsihw == "virtio-scsi-single" else f"scsihw{number}"
        kind = "scsi-cd" if cdrom else "scsi-hd"
        if model.startswith("virtio-scsi"):
            unit = 0 if scsihw == "virtio-scsi-single" else index
            device = f"{kind},bus={controller}.0,channel=0,scsi-id=0,lun={unit}"
        else:
            device = f"{kind},bus={controller}.0,scsi-id={index % per_controller}"
    return ["-device", ",".join([device, f"drive=drive-{key}", f"id={key}", *extra])], controller


def drive_args(
    config: Mapping[str, str],
    resolve: Resolver,
    bootindex: Mapping[str, int],
    *,
    q35: bool = False,
    cloudinit_image: str = "",
) -> list[str]:
    """Every disk and CD-ROM of ``config`` with the controllers they sit on."""
    scsihw = config.get("scsihw", "lsi")
    if scsihw not in SCSI_CONTROLLERS:
        raise CommandError(f"scsihw: unknown controller '{shown(scsihw)}'")
    controllers: list[str] = []
    iothreads: list[str] = []
    devices_argv: list[str] = []
    backends: list[str] = []
    ahci = False
    for key in drive_keys(config):
        backend, items, cdrom = _backend(key, config[key], resolve, cloudinit_image)
        front, controller = _front_end(key, items, cdrom, scsihw, q35)
        if key in bootindex:
            front[-1] += f",bootindex={bootindex[key]}"
        if items.get("iothread") == "1":
            iothreads += ["-object", f"iothread,id=iothread-{controller or key}"]
        if controller and controller not in controllers:
            controllers.append(controller)
        ahci = ahci or key.startswith("sata")
        backends += backend
        devices_argv += front
    controller_argv: list[str] = []
    for controller in controllers:
        model = SCSI_CONTROLLERS[scsihw][0]
        option = f",iothread=iothread-{controller}" if f"iothread,id=iothread-{controller}" in iothreads else ""
        controller_argv += ["-device", f"{model},id={controller}{option}"]
    if ahci:
        controller_argv = ["-device", "ahci,id=ahci0,multifunction=on", *controller_argv]
    return iothreads + controller_argv + backends + devices_argv


def efi_args(config: Mapping[str, str], resolve: Resolver, firmware: Mapping[str, str], temp_vars: str) -> list[str]:
    """OVMF as two pflash drives: the read-only code, and the VM's vars (``efidisk0``, else a temporary copy)."""
    value = config.get("efidisk0")
    items = property_string_parse(value, default_key="file") if value else {}
    efitype = items.get("efitype", "2m")
    if efitype not in ("2m", "4m"):
        raise CommandError(f"efidisk0: invalid efitype '{shown(efitype)}'")
    secure = items.get("pre-enrolled-keys") == "1"
    code = firmware[f"code-{efitype}{'-secboot' if secure else ''}"]
    argv = ["-drive", f"if=pflash,unit=0,format=raw,readonly=on,file={_escape(code)}"]
    if value:
        unknown = set(items) - {"file", "efitype", "pre-enrolled-keys", "size", "format", "ms-cert"}
        if unknown:
            raise CommandError(f"efidisk0: option '{shown(sorted(unknown)[0])}' is not supported")
        volume = devices.parse_volume(items["file"])
        if volume.kind != "images":
            raise CommandError(f"efidisk0: '{shown(volume.text)}' is not a disk image volume")
        path, fmt = resolve(volume.text)
        argv += ["-drive", f"if=pflash,unit=1,id=drive-efidisk0,format={fmt},file={_escape(path)}"]
    else:
        argv += ["-drive", f"if=pflash,unit=1,id=drive-efidisk0,format=raw,file={_escape(temp_vars)}"]
    return argv
