"""Who may change what in a VM: qemu-server's ``check_vm_modify_config_perm`` and its helpers.

``config_change_rules`` is pure: for the keys a change sets and deletes (with their current
values) it lists the privileges needed and where, and what only root@pam may do. ``authorize``
evaluates rules for a user with the ACL resolver. ``vms.services`` calls them for every write,
so the API, the admin and ``qm`` (run as root@pam) are held to the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from authz.permissions import PermissionDenied, has_privileges, principal_of
from vms import config_schema as schema
from vms import devices
from vms.cloudinit.options import is_cloudinit_key
from vms.config import ConfigError
from vms.exceptions import RootOnly
from vms.property_strings import property_string_parse

SUPERUSER = "root@pam"
# Any one of them opens the config for editing (the API's permission descriptor, the admin's change form).
CONFIG_PRIVILEGES = (
    "VM.Config.Disk",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.HWType",
    "VM.Config.Options",
    "VM.Config.Cloudinit",
)
# Keys whose privilege does not depend on the value, as qemu-server groups them.
KEY_PRIVILEGES: dict[str, str] = {
    **dict.fromkeys(("cores", "cpu", "cpulimit", "cpuunits", "numa", "sockets", "vcpus"), "VM.Config.CPU"),
    **dict.fromkeys(("memory", "balloon", "shares"), "VM.Config.Memory"),
    **dict.fromkeys(("acpi", "hotplug", "kvm", "machine", "scsihw", "smbios1", "tablet", "vga"), "VM.Config.HWType"),
    **dict.fromkeys(
        (
            "agent",
            "bios",
            "description",
            "migrate_downtime",
            "migrate_speed",
            "name",
            "onboot",
            "ostype",
            "protection",
            "startup",
            "template",
            "tags",
        ),
        "VM.Config.Options",
    ),
    "boot": "VM.Config.Disk",
    "vmstatestorage": "VM.Config.Disk",
}
LOCAL_ZONE = "localnetwork"  # the SDN zone of plain Linux bridges


@dataclass(frozen=True)
class Need:
    """``privileges`` on ``path`` (all of them, or one with ``any_of``); no path means the VM itself."""

    privileges: tuple[str, ...]
    path: str | None = None
    any_of: bool = False


@dataclass(frozen=True)
class Either:
    """Satisfied when every Need of one of the ``options`` is."""

    options: tuple[tuple[Need, ...], ...]


@dataclass(frozen=True)
class RootOnlyRule:
    message: str


Rule = Need | Either | RootOnlyRule


def _vm(privilege: str, *more: str) -> Need:
    return Need((privilege, *more))


def key_class(key: str) -> str:
    """``drive``, ``unused``, ``serial``, ``usb``, ``hostpci``, ``net``, ``cloudinit``, ``privilege`` or ``root``."""
    if is_cloudinit_key(key):
        return "cloudinit"
    if schema.DISK_KEY_RE.fullmatch(key):
        return "unused" if key.startswith("unused") else "drive"
    for prefix in ("serial", "usb", "hostpci", "net"):
        if key.startswith(prefix) and key[len(prefix) :].isdigit():
            return prefix
    return "privilege" if key in KEY_PRIVILEGES else "root"


def _key_rules(key: str) -> list[Rule]:
    """What a key needs whatever its value (``check_vm_modify_config_perm``); args, hookscript ... are root's."""
    kind = key_class(key)
    if kind == "net":
        return [_vm("VM.Config.Network")]
    if kind == "cloudinit":  # qemu-server: either privilege will do
        return [Need(("VM.Config.Cloudinit", "VM.Config.Network"), any_of=True)]
    if kind == "root":
        return [RootOnlyRule(f"only root can set '{key}' config")]
    if kind != "privilege":
        return []  # the value decides (drives, devices)
    rules: list[Rule] = [_vm(KEY_PRIVILEGES[key])]
    if key == "startup":  # the start order changes how the host boots
        rules.append(Need(("Sys.Modify",), "/"))
    return rules


def _drive_rules(value: str) -> list[Rule]:
    """``check_drive_perms``: cloud-init drives need Cloudinit and CDROM, CD-ROMs CDROM, disks Disk."""
    try:
        drive = devices.parse_drive(value)
    except ValueError:
        return [RootOnlyRule("only root can change a drive whose volume is not understood")]
    if drive.media == "cloudinit":
        return [_vm("VM.Config.Cloudinit", "VM.Config.CDROM")]
    return [_vm("VM.Config.CDROM" if drive.is_cdrom else "VM.Config.Disk")]


def volume_rules(vmid: int, volume: devices.Volume) -> list[Rule]:
    """``check_volume_access``: using an existing volume; a host path is root@pam's."""
    if volume.kind == "path":
        return [RootOnlyRule("Only root can pass arbitrary filesystem paths.")]
    storage = f"/storage/{volume.storage}"
    allocate = (Need(("Datastore.Allocate",), storage),)
    if volume.kind in ("iso", "vztmpl"):
        return [Need(("Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.Audit"), storage, any_of=True)]
    if volume.owner is not None and volume.owner == vmid:
        return []
    if volume.kind == "backup" and volume.owner is not None:
        use = (Need(("Datastore.AllocateSpace",), storage), Need(("VM.Backup",), f"/vms/{volume.owner}"))
        return [Either((allocate, use))]
    if volume.kind in ("images", "rootdir") and volume.owner is not None:
        use = (Need(("Datastore.Audit",), storage), Need(("VM.Config.Disk",), f"/vms/{volume.owner}"))
        return [Either((allocate, use))]
    return [allocate[0]]


def _storage_rules(vmid: int, value: str) -> list[Rule]:
    """``check_storage_access`` for a drive being set: allocations, the host's CD drive, volumes."""
    drive = devices.parse_drive(value)
    volume = drive.volume
    if volume.kind in ("none", "cloudinit"):
        return []
    if volume.kind == "cdrom":
        return [Need(("Sys.Console",), "/")]
    if volume.kind == "new":
        return [Need(("Datastore.AllocateSpace",), f"/storage/{volume.storage}")]
    return volume_rules(vmid, volume)


def _serial_rules(key: str, old: str | None, new: str | None) -> list[Rule]:
    """A unix socket needs HWType; a host device (``/dev/...``) is root@pam's, to set, change or remove."""
    if (old is None or old == "socket") and (new is None or new == "socket"):
        return [_vm("VM.Config.HWType")]
    verb = "delete" if new is None else "set"
    return [RootOnlyRule(f"only root can {verb} '{key}' config for real devices")]


def _usb_rules(key: str, value: str) -> list[Rule]:
    try:
        device = devices.parse_usb(value)
    except ValueError:
        return [RootOnlyRule(f"only root can set '{key}' config for real devices")]
    rules: list[Rule] = [_vm("VM.Config.HWType")]
    if device.mapping is not None:
        rules.append(Need(("Mapping.Use",), f"/mapping/usb/{device.mapping}"))
    elif (device.host or "").lower() != "spice":
        rules.append(RootOnlyRule(f"only root can set '{key}' config for real devices"))
    return rules


def _hostpci_rules(key: str, value: str) -> list[Rule]:
    try:
        device = devices.parse_hostpci(value)
    except ValueError:
        return [RootOnlyRule(f"only root can set '{key}' config for non-mapped devices")]
    if device.mapping is None:
        return [RootOnlyRule(f"only root can set '{key}' config for non-mapped devices")]
    rules: list[Rule] = [Need(("Mapping.Use",), f"/mapping/pci/{device.mapping}"), _vm("VM.Config.HWType")]
    if "romfile" in device.options:
        rules.append(RootOnlyRule("only root@pam can set 'romfile' option"))
    return rules


def _trunk_tags(trunks: str) -> list[int]:
    tags: set[int] = set()
    for item in trunks.split(";"):
        low, _, high = item.partition("-")
        tags.update(range(int(low), int(high or low) + 1))
    return sorted(tags)


def bridge_rules(value: str) -> list[Rule]:
    """``check_bridge_access``: SDN.Use on the bridge, or on each VLAN the NIC uses."""
    try:
        items = property_string_parse(value, default_key="model")
    except ValueError:
        return []
    bridge = items.get("bridge")
    if bridge is None:
        return []
    base = f"/sdn/zones/{LOCAL_ZONE}/{bridge}"
    tags = [int(items["tag"])] if items.get("tag", "").isdigit() else []
    tags += _trunk_tags(items["trunks"]) if items.get("trunks") else []
    return [Need(("SDN.Use",), f"{base}/{tag}") for tag in tags] or [Need(("SDN.Use",), base)]


def _value_rules(vmid: int, key: str, old: str | None, new: str | None) -> list[Rule]:
    """What replacing ``old`` by ``new`` needs for value-dependent keys (``new`` None: deleting)."""
    kind = key_class(key)
    rules: list[Rule] = []
    if kind == "drive":
        for value in (old, new):
            if value is not None:
                rules += _drive_rules(value)
        if new is not None:
            rules += _storage_rules(vmid, new)
    elif kind == "unused":
        if new is None:
            rules.append(_vm("VM.Config.Disk"))
        else:
            rules += volume_rules(vmid, devices.parse_drive(new).volume)
    elif kind == "serial":
        rules += _serial_rules(key, old, new)
    elif kind in ("usb", "hostpci"):
        check = _usb_rules if kind == "usb" else _hostpci_rules
        for value in (old, new):
            if value is not None:
                rules += check(key, value)
    elif kind == "net":
        for value in (old, new):
            if value is not None:
                rules += bridge_rules(value)
    return rules


def config_change_rules(
    vmid: int, current: Mapping[str, str], set_: Mapping[str, str], delete: Iterable[str]
) -> list[Rule]:
    """Every rule a change must satisfy: deleting a key needs what setting it needs. ``set_`` is validated."""
    rules: list[Rule] = []
    for key in delete:
        rules += _key_rules(key) + _value_rules(vmid, key, current.get(key), None)
    for key, value in set_.items():
        rules += _key_rules(key) + _value_rules(vmid, key, current.get(key), value)
    return list(dict.fromkeys(rules))


def pool_change_rules(vmid: int, old: str | None, new: str | None) -> list[Rule]:
    """Moving a VM between pools: Pool.Allocate on both, and the right to change who may use the VM."""
    if old == new:
        return []
    rules: list[Rule] = [Need(("Permissions.Modify", "VM.Allocate"), f"/vms/{vmid}", any_of=True)]
    rules += [Need(("Pool.Allocate",), f"/pool/{pool}") for pool in (old, new) if pool]
    return rules


def allocate_rule(vmid: int, pool: str | None) -> Rule:
    """A new VM (created or cloned): VM.Allocate on its VMID (and Pool.Allocate on ``pool``), or on ``pool``."""
    on_vmid = Need(("VM.Allocate",), f"/vms/{vmid}")
    if not pool:
        return on_vmid
    return Either(((on_vmid, Need(("Pool.Allocate",), f"/pool/{pool}")), (Need(("VM.Allocate",), f"/pool/{pool}"),)))


def create_rules(vmid: int, config: Mapping[str, str], *, pool: str | None, storage: str | None) -> list[Rule]:
    """POST /nodes/{node}/qemu: VM.Allocate on the VMID, or on the pool it is created in, plus every key's rules.

    Proxmox accepts VM.Allocate on /vms/<vmid> alone for a VM created into any pool; here, as for a
    move into a pool, that also takes Pool.Allocate on the pool (VM.Allocate on the pool itself suffices).
    """
    rules = [allocate_rule(vmid, pool)]
    if storage:
        rules.append(Need(("Datastore.AllocateSpace",), f"/storage/{storage}"))
    return rules + config_change_rules(vmid, {}, config, ())


def is_superuser(actor: Any) -> bool:
    return principal_of(actor) == SUPERUSER


def _path(need: Need, vmid: int | None) -> str:
    if need.path is not None:
        return need.path
    if vmid is None:
        raise ValueError("a rule on 'the VM' needs a vmid")
    return f"/vms/{vmid}"


def _holds(actor: Any, need: Need, vmid: int | None, pool: str | None) -> bool:
    if need.path is None and pool and has_privileges(actor, f"/pool/{pool}", need.privileges, any_of=need.any_of):
        return True  # check_vm_perm: on create, the pool's privileges count for the new VM
    return has_privileges(actor, _path(need, vmid), need.privileges, any_of=need.any_of)


def _denied(actor: Any, need: Need, vmid: int | None) -> PermissionDenied:
    path = _path(need, vmid)
    missing = [p for p in need.privileges if not has_privileges(actor, path, [p])]
    return PermissionDenied(path, need.privileges[0] if need.any_of or not missing else missing[0])


def authorize(actor: Any, rules: Iterable[Rule], *, vmid: int | None = None, pool: str | None = None) -> None:
    """Raise RootOnly or PermissionDenied for the first rule ``actor`` does not meet; root@pam meets all.

    A Need without a path is on the VM ``vmid``; with ``pool`` (a VM being created in it), the
    pool's privileges count first, as qemu-server's ``check_vm_perm``.
    """
    if is_superuser(actor):
        return
    for rule in rules:
        if isinstance(rule, RootOnlyRule):
            raise RootOnly(rule.message)
        if isinstance(rule, Need):
            if not _holds(actor, rule, vmid, pool):
                raise _denied(actor, rule, vmid)
            continue
        if any(all(_holds(actor, need, vmid, pool) for need in option) for option in rule.options):
            continue
        last = rule.options[-1]
        raise _denied(actor, next(n for n in last if not _holds(actor, n, vmid, pool)), vmid)


def check_skiplock(actor: Any, skiplock: bool) -> None:
    if skiplock and not is_superuser(actor):
        raise ConfigError({"skiplock": "Only root may use this option."})
