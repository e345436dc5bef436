"""A VM config as a QEMU command line, built the way qemu-server's ``config_to_command`` builds it.

Pure (no Django): the host's facts (KVM usable, QEMU version, firmware paths), the VM's runtime
file paths and the volume resolver are passed in. Every key is parsed and mapped to arguments;
a value that cannot be translated safely is refused with a clear error (``CommandError``), never
passed through. ``args`` (root@pam's only, by the config rules) is the one exception: it is split
with ``shlex`` and appended.
"""

from __future__ import annotations

import base64
import binascii
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from vms import config_schema as schema
from vms import devices
from vms.config import _net_parts, check_value
from vms.property_strings import property_string_parse, shown
from vms.qemu import drives
from vms.qemu.drives import CommandError, Resolver

__all__ = ["CommandError", "Host", "Resolver", "build_command", "resolve_machine"]

QEMU_BINARY = "/usr/bin/qemu-system-x86_64"
OVMF = {
    "code-2m": "/usr/share/OVMF/OVMF_CODE.fd",
    "code-2m-secboot": "/usr/share/OVMF/OVMF_CODE.secboot.fd",
    "code-4m": "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "code-4m-secboot": "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
    "vars-2m": "/usr/share/OVMF/OVMF_VARS.fd",
    "vars-4m": "/usr/share/OVMF/OVMF_VARS_4M.fd",
}
WINDOWS = ("wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11")
# Keys that are the cluster's business, not QEMU's: they add no argument.
NO_ARGUMENTS = {
    "description", "tags", "onboot", "startup", "protection", "template", "lock", "parent",
    "meta", "hotplug", "shares", "cpuunits", "ostype",
}  # fmt: skip
REFUSED = {
    "hookscript": "hookscripts are not supported",
    "tpmstate0": "TPM state (swtpm) is not supported",
}
MACHINE_RE = re.compile(r"(pc|q35|pc-i440fx-(\d+\.\d+)|pc-q35-(\d+\.\d+))(\+pve\d+)?")
CPU_FAMILY_RE = re.compile(
    r"(486|athlon|Broadwell|Cascadelake-Server|Conroe|Cooperlake|core2duo|coreduo|Denverton|Dhyana|EPYC|"
    r"EPYC-Genoa|EPYC-Milan|EPYC-Rome|GraniteRapids|Haswell|Icelake-Client|Icelake-Server|IvyBridge|"
    r"KnightsMill|kvm32|kvm64|max|n270|Nehalem|Opteron_G[1-5]|Penryn|pentium[23]?|phenom|qemu32|qemu64|"
    r"SandyBridge|SapphireRapids|Skylake-Client|Skylake-Server|Snowridge|Westmere|host)"
    r"(-(IBRS|IBPB|noTSX|noTSX-IBRS|v[1-9]))?"
)
# qemu-server's x86-64 micro-architecture levels: qemu64 plus these flags.
X86_64_LEVELS = {
    "x86-64-v2": "+cx16,+lahf_lm,+popcnt,+sse4.1,+sse4.2,+ssse3",
    "x86-64-v2-AES": "+aes,+cx16,+lahf_lm,+popcnt,+sse4.1,+sse4.2,+ssse3",
    "x86-64-v3": "+aes,+cx16,+lahf_lm,+popcnt,+sse4.1,+sse4.2,+ssse3,+avx,+avx2,+bmi1,+bmi2,+f16c,+fma,+abm,+movbe,+xsave",
    "x86-64-v4": "+aes,+cx16,+lahf_lm,+popcnt,+sse4.1,+sse4.2,+ssse3,+avx,+avx2,+bmi1,+bmi2,+f16c,+fma,+abm,+movbe,"
    "+xsave,+avx512f,+avx512bw,+avx512cd,+avx512dq,+avx512vl",
}
# The CPU flags qemu-server lets a config turn on or off.
CPU_FLAGS = {
    "pcid", "spec-ctrl", "ibpb", "ssbd", "virt-ssbd", "amd-ssbd", "amd-no-ssb", "pdpe1gb", "md-clear",
    "hv-tlbflush", "hv-evmcs", "aes",
}  # fmt: skip
NIC_DEVICES = {
    "virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "rtl8139", "vmxnet3": "vmxnet3",
    "i82551": "i82551", "i82557b": "i82557b", "i82559er": "i82559er", "ne2k_pci": "ne2k_pci", "pcnet": "pcnet",
    "ne2k_isa": "ne2k_isa",
}  # fmt: skip
VGA_DEVICES = {"std": "VGA", "cirrus": "cirrus-vga", "vmware": "vmware-svga", "virtio": "virtio-vga"}
SMBIOS1_TEXT = ("manufacturer", "product", "version", "serial", "sku", "family")
SMBIOS_TEXT_RE = re.compile(r"[A-Za-z0-9 ._:/()+\-]{1,255}")
UUID_RE = re.compile(r"[a-fA-F0-9]{8}(-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}")


@dataclass(frozen=True)
class Host:
    """What the node offers: KVM or not, its QEMU version, vhost-net, firmware files."""

    kvm: bool
    qemu_version: str  # "7.2.22"
    vhost_net: bool = False
    firmware: Mapping[str, str] = field(default_factory=lambda: dict(OVMF))


def windows(config: Mapping[str, str]) -> bool:
    return config.get("ostype", "") in WINDOWS


def _major_minor(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise CommandError(f"unparsable QEMU version '{shown(version)}'")
    return int(match.group(1)), int(match.group(2))


def resolve_machine(config: Mapping[str, str], qemu_version: str) -> str:
    """The versioned machine QEMU gets, as qemu-server's ``get_vm_machine`` decides it.

    An explicit version is kept (a ``+pveN`` revision names Proxmox's patched QEMU: dropped here).
    ``pc``/``q35``/none: Windows guests are pinned (to the QEMU they were created with, from
    ``meta: creation-qemu``, when that is 9.1 or newer, else 5.1), others get this QEMU's latest.
    """
    raw = config.get("machine", "")
    items = property_string_parse(raw, default_key="type") if raw else {}
    if set(items) - {"type"}:
        raise CommandError(f"machine: option '{shown(sorted(set(items) - {'type'})[0])}' is not supported")
    machine = items.get("type", "pc")
    match = MACHINE_RE.fullmatch(machine)
    if match is None:
        raise CommandError(f"machine: unsupported machine type '{shown(machine)}'")
    base = match.group(1)
    installed = _major_minor(qemu_version)
    if base in ("pc", "q35"):
        version = "{}.{}".format(*installed)
        if windows(config):
            version = "5.1"
            meta = property_string_parse(config["meta"], default_key=None) if config.get("meta") else {}
            created = meta.get("creation-qemu", "")
            if created and _major_minor(created) >= (9, 1):
                version = "{}.{}".format(*_major_minor(created))
            if _major_minor(version) > installed:
                version = "{}.{}".format(*installed)
        return f"{'pc-i440fx' if base == 'pc' else 'pc-q35'}-{version}"
    if _major_minor(match.group(2) or match.group(3)) > installed:
        raise CommandError(f"machine: '{shown(machine)}' is newer than this node's QEMU {qemu_version}")
    return base


def _integer(config: Mapping[str, str], key: str, default: int) -> int:
    value = config.get(key)
    if value is None:
        return default
    text = value.removeprefix("current=") if key == "memory" else value
    if not text.isdigit():
        raise CommandError(f"{key}: '{shown(value)}' is not a number")
    return int(text)


def _cpu_args(config: Mapping[str, str], host: Host) -> list[str]:
    """``-smp`` and ``-cpu``: model, level flags, allowed flags, KVM paravirt features, Hyper-V for Windows."""
    sockets, cores = _integer(config, "sockets", 1), _integer(config, "cores", 1)
    maxcpus = sockets * cores
    vcpus = _integer(config, "vcpus", maxcpus)
    if not 1 <= vcpus <= maxcpus:
        raise CommandError(f"vcpus: {vcpus} is more than sockets*cores ({maxcpus})")
    raw = config.get("cpu", "")
    items = property_string_parse(raw, default_key="cputype") if raw else {}
    model = items.pop("cputype", "kvm64" if host.kvm else "qemu64")
    flags: list[str] = []
    if model in X86_64_LEVELS:
        flags += X86_64_LEVELS[model].split(",")
        model = "qemu64"
    elif not CPU_FAMILY_RE.fullmatch(model):
        raise CommandError(f"cpu: unknown CPU model '{shown(model)}'")
    if model == "host" and not host.kvm:
        raise CommandError("cpu: 'host' needs KVM")
    if model in ("kvm64", "qemu64"):
        flags += ["+lahf_lm", "+sep"]
    if host.kvm:
        # No ``enforce``: a nested or emulated KVM may lack a model flag, and QEMU then only warns.
        flags += ["+kvm_pv_unhalt", "+kvm_pv_eoi"]
    for flag in filter(None, items.pop("flags", "").split(";")):
        if flag[:1] not in "+-" or flag[1:] not in CPU_FLAGS:
            raise CommandError(f"cpu: flag '{shown(flag)}' is not allowed")
        flags.append(flag)
    if items.pop("hidden", "0") == "1":
        flags.append("kvm=off")
    vendor = items.pop("hv-vendor-id", None)
    if vendor is not None:
        if not re.fullmatch(r"[A-Za-z0-9]{1,12}", vendor):
            raise CommandError(f"cpu: invalid hv-vendor-id '{shown(vendor)}'")
        flags.append(f"hv_vendor_id={vendor}")
    bits = items.pop("phys-bits", None)
    if bits is not None:
        if bits == "host":
            flags.append("host-phys-bits=true")
        elif bits.isdigit() and 8 <= int(bits) <= 64:
            flags.append(f"phys-bits={bits}")
        else:
            raise CommandError(f"cpu: invalid phys-bits '{shown(bits)}'")
    if items:
        raise CommandError(f"cpu: option '{shown(sorted(items)[0])}' is not supported")
    if windows(config) and host.kvm:
        flags += ["hv_relaxed", "hv_spinlocks=0x1fff", "hv_vapic", "hv_time"]
        if config.get("ostype") in ("win8", "win10", "win11"):
            flags += ["hv_reset", "hv_vpindex", "hv_runtime", "hv_synic", "hv_stimer", "hv_ipi"]
    smp = f"{vcpus},sockets={sockets},cores={cores},maxcpus={maxcpus}"
    return ["-smp", smp, "-cpu", ",".join([model, *dict.fromkeys(flags)])]


def _memory_args(config: Mapping[str, str]) -> list[str]:
    memory = _integer(config, "memory", 512)
    argv = ["-m", str(memory)]
    if config.get("numa") == "1":
        sockets, cores = _integer(config, "sockets", 1), _integer(config, "cores", 1)
        if memory % sockets:
            raise CommandError(f"numa: memory ({memory} MiB) must divide evenly over {sockets} sockets")
        for node in range(sockets):
            first = node * cores
            argv += ["-object", f"memory-backend-ram,id=ram-node{node},size={memory // sockets}M"]
            argv += ["-numa", f"node,nodeid={node},cpus={first}-{first + cores - 1},memdev=ram-node{node}"]
    balloon = _integer(config, "balloon", memory)
    if balloon > memory:
        raise CommandError(f"balloon: target {balloon} MiB is more than memory ({memory} MiB)")
    if balloon != 0:  # 0 turns the balloon device off; the target is set at run time (autoballoon)
        argv += ["-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on"]
    return argv


def _smbios_args(config: Mapping[str, str]) -> list[str]:
    raw = config.get("smbios1")
    if not raw:
        return []
    items = property_string_parse(raw, default_key=None)
    encoded = items.pop("base64", "0") == "1"
    parts = ["type=1"]
    uuid = items.pop("uuid", None)
    if uuid is not None:
        if not UUID_RE.fullmatch(uuid):
            raise CommandError(f"smbios1: invalid uuid '{shown(uuid)}'")
        parts.append(f"uuid={uuid}")
    for key in SMBIOS1_TEXT:
        value = items.pop(key, None)
        if value is None:
            continue
        if encoded:
            try:
                value = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise CommandError(f"smbios1: {key} is not valid base64 text") from None
        if not SMBIOS_TEXT_RE.fullmatch(value):
            raise CommandError(f"smbios1: {key} may only hold letters, digits, spaces and ._:/()+-")
        parts.append(f"{key}={value}")
    if items:
        raise CommandError(f"smbios1: option '{shown(sorted(items)[0])}' is not supported")
    return ["-smbios", ",".join(parts)]


def _net_args(config: Mapping[str, str], vmid: int, host: Host, bootindex: Mapping[str, int]) -> list[str]:
    """``netN``: a tap the runtime plugs into the bridge beforehand (``script=no``), or user networking."""

    argv: list[str] = []
    for key in sorted((k for k in config if re.fullmatch(r"net\d+", k)), key=lambda k: int(k[3:])):
        model, mac, options = _net_parts(config[key])
        index = int(key[3:])
        if not mac:
            raise CommandError(f"{key}: no MAC address (set one, or recreate the device)")
        for option, value in options.items():
            if option == "firewall" and value == "1":
                raise CommandError(f"{key}: the firewall is not supported yet (set firewall=0)")
            if option in ("rate", "trunks"):
                raise CommandError(f"{key}: '{option}' is not supported yet")
        netdev = [f"id={key}"]
        if "bridge" in options:
            netdev = ["type=tap", *netdev, f"ifname=tap{vmid}i{index}", "script=no", "downscript=no"]
            if model == "virtio" and host.vhost_net:
                netdev.append("vhost=on")
        else:
            netdev = ["type=user", *netdev]
        device = [NIC_DEVICES[model], f"mac={mac}", f"netdev={key}", f"id={key}"]
        queues = int(options.get("queues", "0") or 0)
        if queues > 1:
            if model != "virtio":
                raise CommandError(f"{key}: multiqueue needs the virtio model")
            netdev.append(f"queues={queues}")
            device += ["mq=on", f"vectors={2 * queues + 2}"]
        if "mtu" in options and model == "virtio":
            device.append(f"host_mtu={options['mtu']}")
        if key in bootindex:
            device.append(f"bootindex={bootindex[key]}")
        argv += ["-netdev", ",".join(netdev), "-device", ",".join(device)]
    return argv


def _display_args(config: Mapping[str, str]) -> list[str]:
    raw = config.get("vga", "")
    items = property_string_parse(raw, default_key="type") if raw else {}
    kind = items.pop("type", "std")
    memory = items.pop("memory", None)
    if items:
        raise CommandError(f"vga: option '{shown(sorted(items)[0])}' is not supported")
    if kind == "none" or re.fullmatch(r"serial[0-3]", kind):
        if kind != "none" and kind not in config:
            raise CommandError(f"vga: {kind} needs a configured {kind}")
        return []
    if kind not in VGA_DEVICES:
        raise CommandError(f"vga: display '{shown(kind)}' is not supported (SPICE and GL displays are not)")
    device = f"{VGA_DEVICES[kind]},id=vga"
    if memory is not None:
        if not memory.isdigit() or not 4 <= int(memory) <= 512 or kind == "virtio":
            raise CommandError(f"vga: memory={shown(memory)} is not supported for {kind}")
        device += f",vgamem_mb={memory}"
    return ["-device", device]


def _usb_args(config: Mapping[str, str], machine: str) -> list[str]:
    argv: list[str] = []
    tablet = config.get("tablet", "1") == "1"
    usb_keys = sorted((k for k in config if re.fullmatch(r"usb\d+", k)), key=lambda k: int(k[3:]))
    xhci = bool(usb_keys) or (tablet and not machine.startswith("pc-i440fx"))
    if xhci:  # q35 gets its tablet on xhci; host devices always sit there
        argv += ["-device", "qemu-xhci,p2=15,p3=15,id=xhci"]
    if tablet:
        bus = "xhci" if not machine.startswith("pc-i440fx") else "uhci"
        if bus == "uhci":
            argv += ["-device", "piix3-usb-uhci,id=uhci"]
        argv += ["-device", f"usb-tablet,id=tablet,bus={bus}.0,port={15 if bus == 'xhci' else 1}"]
    for port, key in enumerate(usb_keys, start=1):
        device = devices.parse_usb(config[key])
        if device.mapping is not None or device.host is None or device.host.lower() == "spice":
            raise CommandError(f"{key}: only host USB devices (vendor:product or bus-port) are supported")
        if ":" in device.host:
            vendor, product = (part.removeprefix("0x") for part in device.host.split(":"))
            host = f"vendorid=0x{vendor},productid=0x{product}"
        else:
            bus, _, ports = device.host.partition("-")
            host = f"hostbus={bus},hostport={ports}"
        argv += ["-device", f"usb-host,bus=xhci.0,port={port},{host},id={key}"]
    return argv


def _agent_and_serial_args(config: Mapping[str, str], files: Callable[[str], str]) -> list[str]:
    argv: list[str] = []
    for key in sorted(k for k in config if re.fullmatch(r"serial[0-3]", k)):
        port = devices.check_serial(config[key])
        if port == "socket":
            argv += ["-chardev", f"socket,id={key},path={files(key)},server=on,wait=off"]
        else:
            argv += ["-chardev", f"serial,id={key},path={port}"]
        argv += ["-device", f"isa-serial,chardev={key}"]
    raw = config.get("agent", "")
    items = property_string_parse(raw, default_key="enabled") if raw else {}
    if items.get("enabled", "0") == "1":
        unknown = set(items) - {"enabled", "type", "fstrim_cloned_disks", "freeze-fs-on-backup"}
        if unknown:
            raise CommandError(f"agent: option '{shown(sorted(unknown)[0])}' is not supported")
        argv += ["-chardev", f"socket,path={files('qga')},server=on,wait=off,id=qga0"]
        if items.get("type", "virtio") == "virtio":
            argv += [
                "-device",
                "virtio-serial,id=qga0",
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            ]
        elif items["type"] == "isa":
            argv += ["-device", "isa-serial,chardev=qga0"]
        else:
            raise CommandError(f"agent: type '{shown(items['type'])}' is not supported")
    return argv


def _check_keys(config: Mapping[str, str]) -> None:
    """Every key is known and valid (the stored config was validated; this refuses anything else)."""
    for key, value in config.items():
        option = schema.SCHEMA.get(key)
        if option is None:
            raise CommandError(f"{shown(key)}: unknown configuration key")
        if key in REFUSED:
            raise CommandError(f"{key}: {REFUSED[key]}")
        if key.startswith("hostpci"):
            raise CommandError(f"{key}: PCI passthrough is not supported")
        try:
            check_value(key, option, value)
        except ValueError as exc:
            raise CommandError(f"{key}: {exc}") from None
    if float(config.get("cpulimit", "0") or 0) != 0:
        raise CommandError("cpulimit: CPU limits are not supported yet")


def build_command(
    vmid: int,
    config: Mapping[str, str],
    *,
    host: Host,
    files: Callable[[str], str],
    resolve: Resolver,
    temp_efivars: str = "",
    cloudinit_image: str = "",
) -> list[str]:
    """The argv that runs VM ``vmid``; ``files(kind)`` is a runtime file's path (pid, qmp, vnc, qga, serialN)."""
    _check_keys(config)
    kvm = host.kvm and config.get("kvm", "1") == "1"
    effective = Host(kvm, host.qemu_version, host.vhost_net, host.firmware)
    machine = resolve_machine(config, host.qemu_version)
    name = config.get("name", f"VM{vmid}")
    # Upstream QEMU has no ``-id`` (a Proxmox patch): ``-pidfile <run>/<vmid>.pid`` names the VM instead.
    argv = [QEMU_BINARY, "-name", f"{name},debug-threads=on"]
    argv += ["-qmp", f"unix:{files('qmp')},server=on,wait=off", "-pidfile", files("pid"), "-daemonize"]
    argv += ["-nodefaults", "-boot", "menu=on,strict=on,reboot-timeout=1000"]
    argv += ["-vnc", f"unix:{files('vnc')},password=on"]
    machine_options = [f"type={machine}", f"accel={'kvm' if kvm else 'tcg'}"]
    if config.get("acpi", "1") == "0":
        machine_options.append("acpi=off")
    argv += ["-machine", ",".join(machine_options)]
    if config.get("bios", "seabios") == "ovmf":
        argv += drives.efi_args(config, resolve, host.firmware, temp_efivars)
    elif config.get("efidisk0"):
        raise CommandError("efidisk0: an EFI disk needs bios: ovmf")
    argv += _smbios_args(config)
    vmgenid = config.get("vmgenid", "0")
    if vmgenid not in ("0", "1"):
        argv += ["-device", f"vmgenid,guid={vmgenid}"]
    argv += _cpu_args(config, effective)
    argv += _memory_args(config)
    if kvm:
        argv += ["-global", "kvm-pit.lost_tick_policy=discard"]
    argv += ["-rtc", "driftfix=slew,base=localtime" if windows(config) else "base=utc"]
    argv += _display_args(config)
    argv += _usb_args(config, machine)
    argv += _agent_and_serial_args(config, files)
    nets = sorted((k for k in config if re.fullmatch(r"net\d+", k)), key=lambda k: int(k[3:]))
    bootindex = drives.boot_order(config, nets)
    argv += drives.drive_args(
        config, resolve, bootindex, q35=machine.startswith("pc-q35"), cloudinit_image=cloudinit_image
    )
    argv += _net_args(config, vmid, effective, bootindex)
    if config.get("args"):
        try:
            argv += shlex.split(config["args"])
        except ValueError as exc:
            raise CommandError(f"args: {exc}") from None
    return argv
