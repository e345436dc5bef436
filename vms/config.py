"""Proxmox QEMU VM configurations: validation, updates and the ``key: value`` file format.

Pure functions (no Django): the API, the admin, ``qm`` and the mirror renderer share them.
Values are strict like Proxmox's schema (integers in canonical decimal, booleans only 0/1)
and may never contain line breaks, so no value can inject a key into the file. The free-text
``description`` is the exception: it is written as leading ``#`` comment lines, one per line.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from vms import config_schema as schema
from vms import devices
from vms.cloudinit import options as ci_options
from vms.config_schema import SCHEMA, Option
from vms.property_strings import property_string_format, property_string_parse
from vms.property_strings import shown as _shown

__all__ = ["property_string_format", "property_string_parse"]  # re-exported: their home is vms.property_strings

NOT_IN_SCHEMA = "property is not defined in schema and the schema does not allow additional properties"
# Tasks take and release the lock (a lease naming its task); only ``qm unlock`` removes one by hand.
SUSPEND_STATE = "written by a suspend to disk and removed by the start that resumes from it"
LOCK_BY_HAND = "the lock is taken and released by tasks; a leftover one is removed with 'qm unlock'"
MAX_VALUE = 64 * 1024  # bytes, any one value
MAX_CONFIG = 512 * 1024  # bytes, the whole formatted file


class ConfigError(ValueError):
    """Parameter errors, all of them at once: ``errors`` maps each parameter to its message."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors: dict[str, str] = {_shown(str(key)): str(message) for key, message in errors.items()}
        details = "\n".join(f"{key}: {message}" for key, message in sorted(self.errors.items()))
        super().__init__(f"Parameter verification failed.\n{details}")


class RandomSource(Protocol):
    """What ``normalise_for_create`` needs of its rng (``random.Random`` and ``SystemRandom`` fit)."""

    def getrandbits(self, k: int, /) -> int: ...


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def validate_vmid(value: object) -> int:
    """100..999999999 given as an int or a canonical decimal string (no sign, zeros or blanks)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError({"vmid": f"type check ('integer') failed - got '{_shown(str(value))}'"})
    text = str(value) if isinstance(value, int) and abs(value) < 10**12 else value
    if not isinstance(text, str) or not schema.VMID_RE.fullmatch(text):
        raise ConfigError({"vmid": f"type check ('integer') failed - got '{_shown(str(value))}'"})
    vmid = int(text)
    if not 100 <= vmid <= 999_999_999:
        raise ConfigError({"vmid": f"invalid format - value must be between 100 and 999999999, got {vmid}"})
    return vmid


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"  # a JSON true/false
    if isinstance(value, int):
        if abs(value) >= 10**30:
            raise ValueError("value out of range")
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"type check ('string') failed - got a {type(value).__name__}")


def _in_range(number: float, option: Option) -> None:
    low, high = option.minimum, option.maximum
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"value must be between {_num(low or 0)} and {_num(high or 0)}")


def _check_integer(text: str, option: Option) -> str:
    if option.kind == "memory":
        text = text.removeprefix("current=")
    if not schema.INTEGER_RE.fullmatch(text):
        raise ValueError(f"type check ('integer') failed - got '{_shown(text)}'")
    _in_range(int(text), option)
    return str(int(text))


def _check_number(text: str, option: Option) -> str:
    if not schema.NUMBER_RE.fullmatch(text):
        raise ValueError(f"type check ('number') failed - got '{_shown(text)}'")
    _in_range(float(text), option)
    whole, _, fraction = text.partition(".")
    canonical = whole + ("." + fraction.rstrip("0") if fraction.rstrip("0") else "")
    return "0" if canonical == "-0" else canonical


def _check_boolean(text: str, option: Option) -> str:
    if text not in ("0", "1"):
        raise ValueError(f"type check ('boolean') failed - got '{_shown(text)}'")
    return text


def _check_enum(text: str, option: Option) -> str:
    if text not in option.choices:
        shown = ", ".join(option.choices)
        raise ValueError(f"value '{_shown(text)}' does not have a value in the enumeration '{shown}'")
    return text


def _check_dns_name(text: str, option: Option) -> str:
    if not all(schema.DNS_LABEL_RE.fullmatch(label) for label in text.split(".")):
        raise ValueError(f"invalid format - value does not look like a valid DNS name: '{_shown(text)}'")
    return text


def _check_tags(text: str, option: Option) -> str:
    tags = [tag for tag in re.split(r"[;, ]+", text) if tag]
    bad = [tag for tag in tags if not schema.TAG_RE.fullmatch(tag)]
    if bad:
        raise ValueError(f"invalid format - invalid tag '{_shown(bad[0])}'")
    return ";".join(tags)


def _check_string(text: str, option: Option) -> str:
    text = text.strip(" \t")
    if not text:
        raise ValueError("value may not be empty")
    return text


def _check_property(text: str, option: Option) -> str:
    try:
        items = property_string_parse(text, default_key=option.default_key)
    except ValueError as exc:
        raise ValueError(f"invalid format - {exc}") from None
    return property_string_format(items, default_key=option.default_key)


def _is_unicast_mac(mac: str) -> bool:
    return bool(schema.MAC_RE.fullmatch(mac)) and not int(mac[:2], 16) & 1 and mac.replace(":", "") != "0" * 12


def _net_parts(value: str) -> tuple[str, str, dict[str, str]]:
    """``(model, mac or "", other options)`` of a NIC, from ``virtio=MAC,...`` or ``model=..,macaddr=..``."""
    items = property_string_parse(value, default_key="model")
    first_key, first_value = next(iter(items.items()))
    if first_key in schema.NIC_MODELS:
        model, mac = first_key, first_value
        rest = dict(list(items.items())[1:])
    elif first_key == "model":
        model, mac = first_value, items.get("macaddr", "")
        rest = {k: v for k, v in items.items() if k not in ("model", "macaddr")}
    else:
        raise ValueError(f"network model must come first, got '{_shown(first_key)}'")
    if model not in schema.NIC_MODELS:
        raise ValueError(f"invalid network model '{_shown(model)}'")
    return model, mac.upper(), rest


def _check_net(text: str, option: Option) -> str:
    model, mac, rest = _net_parts(text)
    if mac and not _is_unicast_mac(mac):
        raise ValueError(f"invalid MAC address '{_shown(mac)}' (a unicast address is required)")
    for key, value in rest.items():
        pattern = schema.NET_OPTIONS.get(key)
        if pattern is None:
            raise ValueError(f"invalid network option '{_shown(key)}'")
        if not re.fullmatch(pattern, value):
            raise ValueError(f"invalid value for network option '{key}': '{_shown(value)}'")
        if key in schema.NET_RANGES and not schema.NET_RANGES[key][0] <= int(value) <= schema.NET_RANGES[key][1]:
            raise ValueError(f"{key} must be between {schema.NET_RANGES[key][0]} and {schema.NET_RANGES[key][1]}")
    return _format_net(model, mac, rest)


def _format_net(model: str, mac: str, rest: Mapping[str, str]) -> str:
    if mac:
        return property_string_format({model: mac, **rest})
    return property_string_format({"model": model, **rest}, default_key="model")


def _check_disk(text: str, option: Option) -> str:
    items = property_string_parse(text, default_key="file")
    if "file" not in items:
        raise ValueError("the volume must come first")
    devices.parse_volume(items["file"])
    for key, value in items.items():
        if key == "file":
            continue
        pattern = schema.DISK_OPTIONS.get(key) or (
            r"[0-9]+(\.[0-9]+)?" if schema.DISK_THROTTLE_RE.fullmatch(key) else None
        )
        if pattern is None:
            raise ValueError(f"invalid disk option '{_shown(key)}'")
        if not re.fullmatch(pattern, value):
            raise ValueError(f"invalid value for disk option '{key}': '{_shown(value)}'")
    return property_string_format(items, default_key="file")


def _check_unused(text: str, option: Option) -> str:
    """A volume detached from its drive: an existing storage volume, never a new disk, a path or a CD."""
    normal = _check_disk(text, option)
    volume = devices.parse_drive(normal).volume
    if volume.storage is None or volume.kind in ("new", "cloudinit"):
        raise ValueError(f"not a valid volid: '{_shown(volume.text)}'")
    return normal


def _check_storage_id(text: str, option: Option) -> str:
    if not schema.STORAGE_RE.fullmatch(text):
        raise ValueError(f"invalid format - storage ID '{_shown(text)}' contains illegal characters")
    return text


def _check_serial(text: str, option: Option) -> str:
    return devices.check_serial(text)


def _check_usb(text: str, option: Option) -> str:
    devices.parse_usb(text)
    return text


def _check_hostpci(text: str, option: Option) -> str:
    devices.parse_hostpci(text)
    return text


def _check_vmgenid(text: str, option: Option) -> str:
    if not schema.VMGENID_RE.fullmatch(text):
        raise ValueError(f"invalid format - value does not look like a UUID (or 0 or 1): '{_shown(text)}'")
    return text


def _check_description(text: str, option: Option) -> str:
    lines = schema.LINE_BREAK_RE.split(text)
    if any(schema.DESCRIPTION_CONTROL_RE.search(line) for line in lines):
        raise ValueError("value contains control characters")
    return "\n".join(lines)


_CHECKS: dict[str, Callable[[str, Option], str]] = {
    "integer": _check_integer,
    "memory": _check_integer,
    "number": _check_number,
    "boolean": _check_boolean,
    "enum": _check_enum,
    "dns-name": _check_dns_name,
    "tags": _check_tags,
    "string": _check_string,
    "property": _check_property,
    "net": _check_net,
    "disk": _check_disk,
    "description": _check_description,
    "unused": _check_unused,
    "serial": _check_serial,
    "usb": _check_usb,
    "hostpci": _check_hostpci,
    "vmgenid": _check_vmgenid,
    "storage": _check_storage_id,
    "ipconfig": lambda text, _option: ci_options.check_ipconfig(text),
    "sshkeys": lambda text, _option: ci_options.check_sshkeys(text),
    "address-list": lambda text, _option: ci_options.check_address_list(text),
    "domain-list": lambda text, _option: ci_options.check_domain_list(text),
    "cipassword": lambda text, _option: ci_options.check_cipassword(text),
}


def check_value(key: str, option: Option, raw: object) -> str:
    """Validate and normalise one value; ValueError with Proxmox's wording."""
    text = _text(raw)
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("value is not valid Unicode text (lone surrogate)") from None
    limit = min(option.max_length, MAX_VALUE)
    if len(text) > limit or len(encoded) > MAX_VALUE:
        raise ValueError(f"value may only be {limit} characters long")
    if option.kind != "description" and schema.CONTROL_RE.search(text):
        raise ValueError("value contains control or bidirectional formatting characters")
    return _CHECKS[option.kind](text, option)


def _check_size(config: Mapping[str, str]) -> None:
    size = len(format_config(config).encode())
    if size > MAX_CONFIG:
        raise ConfigError({"config": f"configuration is too large ({size} bytes, at most {MAX_CONFIG})"})


def validate_options(params: Mapping[str, object], *, creating: bool) -> dict[str, str]:
    """Validate and normalise option updates; ConfigError lists every bad one.

    ``creating`` is accepted for symmetry with Proxmox's create/update schemas; both accept
    ``<storage>:<size>`` disks (Proxmox allocates new disks on update too).
    """
    errors: dict[str, str] = {}
    result: dict[str, str] = {}
    for key, raw in params.items():
        option = SCHEMA.get(key) if isinstance(key, str) else None
        if option is None:
            errors[str(key)] = NOT_IN_SCHEMA
            continue
        if key == "lock":
            errors[key] = LOCK_BY_HAND
            continue
        if key in schema.SUSPEND_KEYS:
            errors[key] = SUSPEND_STATE
            continue
        try:
            result[key] = check_value(key, option, raw)
        except ValueError as exc:
            errors[key] = str(exc)
    if errors:
        raise ConfigError(errors)
    _check_size(result)
    return result


def delete_list(delete: Iterable[object] | str | None) -> list[str]:
    """The keys of a ``delete`` parameter (a list, or one string separated by commas, semicolons or blanks)."""
    if delete is None:
        return []
    raw = [delete] if isinstance(delete, str) else [str(item) for item in delete]
    keys = [part for item in raw for part in re.split(r"[\s,;\x00]+", item) if part]
    return list(dict.fromkeys(keys))


def apply_update(
    current: Mapping[str, str], set_: Mapping[str, object], delete: Iterable[str] | str | None
) -> dict[str, str]:
    """The config after setting ``set_`` and removing ``delete`` (both validated); ``current`` is untouched."""
    errors: dict[str, str] = {}
    updates: dict[str, str] = {}
    try:
        updates = validate_options(set_, creating=False)
    except ConfigError as exc:
        errors.update(exc.errors)
    removed = delete_list(delete)
    for key in removed:
        if not schema.CONFIGID_RE.fullmatch(key):
            errors["delete"] = f"invalid format - invalid configuration ID '{_shown(key)}'"
        elif key not in SCHEMA:
            errors[key] = NOT_IN_SCHEMA
        elif key == "lock":
            errors[key] = LOCK_BY_HAND
        elif key in schema.SUSPEND_KEYS:
            errors[key] = SUSPEND_STATE
        elif key in set_:
            errors[key] = "conflicting (set and delete)"
    if errors:
        raise ConfigError(errors)
    config = {k: v for k, v in current.items() if k not in removed}
    config.update(updates)
    if config.get("description") == "":
        del config["description"]  # an empty description is no description (no comment lines)
    _check_size(config)
    return config


def format_config(config: Mapping[str, str]) -> str:
    """Proxmox's file: description as leading ``#`` lines, then ``key: value`` sorted by key.

    Raises ConfigError rather than write a key or value that could break the line structure.
    """
    errors: dict[str, str] = {}
    description = str(config.get("description", ""))
    lines = [f"#{line}" for line in schema.LINE_BREAK_RE.split(description)] if description else []
    for key in sorted(config):
        value = str(config[key])
        if key == "description":
            continue
        if not isinstance(key, str) or not schema.CONFIGID_RE.fullmatch(key):
            errors[str(key)] = "invalid configuration ID"
        elif schema.LINE_BREAK_RE.search(value) or "\x00" in value:
            errors[key] = "value contains a line break or NUL"
        else:
            lines.append(f"{key}: {value}")
    if errors:
        raise ConfigError(errors)
    return "".join(line + "\n" for line in lines)


def parse_config(text: str) -> dict[str, str]:
    """Inverse of ``format_config`` for one section: ``#`` lines are the description.

    ``[snapshot]`` section headers are refused here: ``vms.snapshot_config.parse_config_file`` splits a
    whole file into its sections first.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG:
        raise ConfigError({"config": f"configuration is too large (at most {MAX_CONFIG} bytes)"})
    config: dict[str, str] = {}
    description: list[str] = []
    errors: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#"):
            description.append(line[1:])
            continue
        if not line.strip():
            continue
        if line.startswith("["):
            raise ConfigError({"config": f"line {number}: snapshot sections are not supported"})
        match = schema.LINE_RE.fullmatch(line)
        if match is None:
            errors[f"line {number}"] = f"unable to parse '{_shown(line)}'"
        elif match.group(1) in config:
            errors[match.group(1)] = f"line {number}: duplicate key"
        else:
            config[match.group(1)] = match.group(2)
    if description and "description" in config:
        errors["description"] = "given both as comment lines and as a key"
    if errors:
        raise ConfigError(errors)
    if description:
        config["description"] = "\n".join(description)
    return config


def config_digest(config: Mapping[str, str]) -> str:
    """SHA-1 of the formatted file, the ``digest`` of Proxmox's config API."""
    return hashlib.sha1(format_config(config).encode("utf-8")).hexdigest()


def _random_mac(prefix: str, rng: RandomSource) -> str:
    octets = prefix.upper().split(":")
    if len(octets) > 5 or not all(re.fullmatch(r"[0-9A-F]{2}", o) for o in octets) or int(octets[0], 16) & 1:
        raise ValueError(f"invalid MAC prefix '{_shown(prefix)}' (1 to 5 octets, unicast)")
    octets += [f"{rng.getrandbits(8):02X}" for _ in range(6 - len(octets))]
    return ":".join(octets)


def renew_identity(config: Mapping[str, str], *, mac_prefix: str = "BC:24:11", rng: RandomSource) -> dict[str, str]:
    """A clone's config: new MACs for every NIC, a new smbios1 uuid (other smbios1 fields kept), a new vmgenid if set."""
    result = dict(config)
    for key in sorted(result, key=_key_order):
        if re.fullmatch(r"net\d+", key):
            model, _mac, rest = _net_parts(result[key])
            result[key] = _format_net(model, _random_mac(mac_prefix, rng), rest)
    smbios = property_string_parse(result["smbios1"], default_key=None) if result.get("smbios1") else {}
    smbios["uuid"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    result["smbios1"] = property_string_format(smbios)
    if result.get("vmgenid"):
        result["vmgenid"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return result


def _key_order(key: str) -> tuple[str, int]:
    """``scsi2`` before ``scsi10``."""
    match = re.fullmatch(r"([a-z]+)(\d+)", key)
    return (match.group(1), int(match.group(2))) if match else (key, -1)


def normalise_devices(
    vmid: int, config: Mapping[str, str], *, mac_prefix: str = "BC:24:11", rng: RandomSource
) -> dict[str, str]:
    """NICs without a MAC get one, ``storage:SIZE`` disks get volume names; a new dict, no files made.

    Applied on create and on every update, so a NIC or disk added later is completed the same way.
    """
    result = dict(config)
    for key in sorted(result, key=_key_order):
        if re.fullmatch(r"net\d+", key):
            model, mac, rest = _net_parts(result[key])
            result[key] = _format_net(model, mac or _random_mac(mac_prefix, rng), rest)
    owned = re.compile(rf"(?:^|[:/])(?:vm|base)-{vmid}-disk-(\d+)(?:\.|$)")
    used: set[int] = set()
    for key, value in result.items():
        if schema.DISK_KEY_RE.fullmatch(key):
            volume = property_string_parse(value, default_key="file").get("file", "")
            used.update(int(m.group(1)) for m in owned.finditer(volume))
    for key in sorted(result, key=_key_order):
        if not schema.DISK_KEY_RE.fullmatch(key) or key.startswith("unused"):
            continue
        items = property_string_parse(result[key], default_key="file")
        size = devices.new_disk_size(items.get("file", ""))
        if size is None:
            continue
        index = next(i for i in range(len(used) + 1) if i not in used)
        used.add(index)
        items["file"] = f"{items['file'].partition(':')[0]}:vm-{vmid}-disk-{index}"
        items["size"] = f"{size}G"
        result[key] = property_string_format(items, default_key="file")
    return result


def normalise_for_create(
    vmid: int, config: dict[str, str], *, mac_prefix: str = "BC:24:11", rng: RandomSource
) -> dict[str, str]:
    """``normalise_devices`` plus what only a new VM gets: an smbios1 uuid."""
    result = normalise_devices(vmid, config, mac_prefix=mac_prefix, rng=rng)
    if result.get("description") == "":
        del result["description"]
    if "smbios1" not in result:
        result["smbios1"] = f"uuid={uuid.UUID(int=rng.getrandbits(128), version=4)}"
    return result
