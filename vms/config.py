"""Proxmox QEMU VM configurations: validation, updates and the ``key: value`` file format.

Pure functions (no Django): the API, the admin, ``qm`` and the mirror renderer share them.
Values are strict like Proxmox's schema (integers in canonical decimal, booleans only 0/1)
and may never contain line breaks, so no value can inject a key into the file.
"""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from collections.abc import Iterable, Mapping

from vms.config_schema import DISK_KEY_RE, NIC_MODELS, SCHEMA, Option

NOT_IN_SCHEMA = "property is not defined in schema and the schema does not allow additional properties"
MAX_VALUE = 64 * 1024
MAX_CONFIG = 512 * 1024
INTEGER_RE = re.compile(r"^-?(0|[1-9][0-9]*)$")
NUMBER_RE = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$")
DNS_LABEL_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
TAG_RE = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$", re.IGNORECASE)
MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
VOLUME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9\-_.]*:[^\s,]+$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
CONFIGID_RE = re.compile(r"^[a-z][a-z0-9_\-]*$")
VMID_RE = re.compile(r"^[1-9][0-9]*$")


class ConfigError(ValueError):
    """Parameter errors, all of them at once: ``errors`` maps each parameter to its message."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        details = "; ".join(f"{key}: {message}" for key, message in sorted(errors.items()))
        super().__init__(f"Parameter verification failed. {details}")


def validate_vmid(value: object) -> int:
    """100..999999999 given as an int or a canonical decimal string."""
    if isinstance(value, bool):
        raise ConfigError({"vmid": f"type check ('integer') failed - got '{value}'"})
    text = str(value) if isinstance(value, int) else value if isinstance(value, str) else None
    if text is None or not VMID_RE.match(text):
        raise ConfigError({"vmid": f"type check ('integer') failed - got '{value}'"})
    vmid = int(text)
    if not 100 <= vmid <= 999_999_999:
        raise ConfigError({"vmid": f"invalid format - value must be between 100 and 999999999, got {vmid}"})
    return vmid


def property_string_parse(value: str, *, default_key: str | None) -> dict[str, str]:
    """``a=1,b=2`` (the first item may omit its key: ``default_key``); ValueError when malformed."""
    result: dict[str, str] = {}
    for index, item in enumerate(value.split(",")):
        if not item:
            raise ValueError("empty item")
        key, eq, val = item.partition("=")
        if not eq:
            if index != 0 or default_key is None:
                raise ValueError(f"missing value for '{item}'")
            key, val = default_key, item
        if key in result:
            raise ValueError(f"duplicate key '{key}'")
        result[key] = val
    return result


def property_string_format(values: Mapping[str, str], *, default_key: str | None = None) -> str:
    """Inverse of ``property_string_parse``; the default key's value comes first without its name."""
    items = [values[default_key]] if default_key is not None and default_key in values else []
    items += [f"{k}={v}" for k, v in values.items() if k != default_key]
    return ",".join(items)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"type check ('string') failed - got '{value}'")


def _check_net(value: str) -> str:
    items = property_string_parse(value, default_key="model")
    first_key, first_value = next(iter(items.items()))
    if first_key in NIC_MODELS:
        if first_value != "" and not MAC_RE.match(first_value):
            raise ValueError(f"invalid MAC address '{first_value}'")
    elif first_key == "model":
        if first_value not in NIC_MODELS:
            raise ValueError(f"invalid network model '{first_value}'")
    else:
        raise ValueError(f"network model must come first, got '{first_key}'")
    if "tag" in items and (not INTEGER_RE.match(items["tag"]) or not 1 <= int(items["tag"]) <= 4094):
        raise ValueError("tag must be between 1 and 4094")
    return value


def _check_disk(value: str) -> str:
    if value == "none":
        return value
    items = property_string_parse(value, default_key="file")
    volume = items.get("file", "")
    if volume != "none" and not VOLUME_RE.match(volume) and not volume.startswith("/dev/"):
        raise ValueError(f"invalid volume '{volume}' (expected <storage>:<volume> or <storage>:<size>)")
    if ".." in volume.split(":", 1)[-1].split("/"):
        raise ValueError("volume names may not contain '..'")
    return value


def check_value(key: str, option: Option, raw: object) -> str:
    """Validate and normalise one value; ValueError with Proxmox's wording."""
    text = _text(raw)
    limit = min(option.max_length, MAX_VALUE)
    if len(text) > limit:
        raise ValueError(f"value is too long (at most {limit} characters)")
    if option.kind == "description":
        if "\x00" in text:
            raise ValueError("value contains a NUL character")
        # Every kind of line break becomes "\n", so each line is written as one "#" comment line.
        return "\n".join(text.splitlines())
    if CONTROL_RE.search(text):
        raise ValueError("value contains control or bidirectional formatting characters")
    kind = option.kind
    if kind in ("integer", "memory"):
        if kind == "memory" and text.startswith("current="):
            text = text.removeprefix("current=")
        if not INTEGER_RE.match(text):
            raise ValueError(f"type check ('integer') failed - got '{text}'")
        number = int(text)
        if (option.minimum is not None and number < option.minimum) or (
            option.maximum is not None and number > option.maximum
        ):
            raise ValueError(f"value must be between {option.minimum:g} and {option.maximum:g}")
        return str(number)
    if kind == "number":
        if not NUMBER_RE.match(text):
            raise ValueError(f"type check ('number') failed - got '{text}'")
        if (option.minimum is not None and float(text) < option.minimum) or (
            option.maximum is not None and float(text) > option.maximum
        ):
            raise ValueError(f"value must be between {option.minimum:g} and {option.maximum:g}")
        return text
    if kind == "boolean":
        if text not in ("0", "1"):
            raise ValueError(f"type check ('boolean') failed - got '{text}'")
        return text
    if kind == "enum":
        if text not in option.choices:
            raise ValueError(f"value '{text}' does not have a value in the enumeration '{', '.join(option.choices)}'")
        return text
    if kind == "dns-name":
        if not all(DNS_LABEL_RE.match(label) for label in text.split(".")):
            raise ValueError(f"invalid format - value does not look like a valid DNS name: '{text}'")
        return text
    if kind == "tags":
        tags = [tag for tag in re.split(r"[;, ]", text) if tag]
        if not all(TAG_RE.match(tag) for tag in tags):
            raise ValueError(f"invalid tags '{text}'")
        return ";".join(tags)
    if kind == "net":
        return _check_net(text)
    if kind == "disk":
        return _check_disk(text)
    if not text and kind == "string":
        raise ValueError("value may not be empty")
    return text


def validate_options(params: Mapping[str, object], *, creating: bool) -> dict[str, str]:
    """Validate a set of options; ConfigError lists every bad one."""
    errors: dict[str, str] = {}
    result: dict[str, str] = {}
    for key, raw in params.items():
        option = SCHEMA.get(key)
        if option is None:
            errors[key] = NOT_IN_SCHEMA
            continue
        try:
            result[key] = check_value(key, option, raw)
        except ValueError as exc:
            errors[key] = str(exc)
    if errors:
        raise ConfigError(errors)
    return result


def _delete_list(delete: Iterable[str] | str | None) -> list[str]:
    if delete is None:
        return []
    items = re.split(r"[,;\s]+", delete) if isinstance(delete, str) else list(delete)
    return [item for item in items if item]


def apply_update(
    current: Mapping[str, str], set_: Mapping[str, object], delete: Iterable[str] | str | None
) -> dict[str, str]:
    """The config after setting ``set_`` and removing ``delete`` (both validated)."""
    errors: dict[str, str] = {}
    updates: dict[str, str] = {}
    try:
        updates = validate_options(set_, creating=False)
    except ConfigError as exc:
        errors.update(exc.errors)
    removed = _delete_list(delete)
    for key in removed:
        if not CONFIGID_RE.match(key) or key not in SCHEMA:
            errors[key] = NOT_IN_SCHEMA if CONFIGID_RE.match(key) else "invalid configuration ID"
        elif key in set_:
            errors[key] = "conflicting (set and delete)"
    if errors:
        raise ConfigError(errors)
    config = {k: v for k, v in current.items() if k not in removed}
    config.update(updates)
    if len(format_config(config).encode()) > MAX_CONFIG:
        raise ConfigError({"config": f"configuration exceeds {MAX_CONFIG} bytes"})
    return config


def format_config(config: Mapping[str, str]) -> str:
    """Proxmox's file: description as leading ``#`` lines, then ``key: value`` sorted by key."""
    lines = [f"#{line}" for line in config.get("description", "").split("\n")] if config.get("description") else []
    lines += [f"{key}: {config[key]}" for key in sorted(config) if key != "description"]
    return "".join(line + "\n" for line in lines)


def parse_config(text: str) -> dict[str, str]:
    """Inverse of ``format_config``; snapshots (``[name]`` sections) are not supported yet."""
    config: dict[str, str] = {}
    description: list[str] = []
    errors: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if line.startswith("#"):
            description.append(line[1:])
            continue
        if line.startswith("["):
            raise ConfigError({"config": f"line {number}: snapshot sections are not supported"})
        key, sep, value = line.partition(":")
        if not sep or not CONFIGID_RE.match(key.strip()):
            errors[f"line {number}"] = f"unable to parse '{line}'"
            continue
        config[key.strip()] = value.strip()
    if errors:
        raise ConfigError(errors)
    if description:
        config["description"] = "\n".join(description)
    return config


def config_digest(config: Mapping[str, str]) -> str:
    """SHA-1 of the formatted file, the ``digest`` of Proxmox's config API."""
    return hashlib.sha1(format_config(config).encode()).hexdigest()


def _random_mac(prefix: str, rng: random.Random) -> str:
    return ":".join([prefix.upper(), *(f"{rng.randrange(256):02X}" for _ in range(3))])


def normalise_for_create(
    vmid: int, config: dict[str, str], *, mac_prefix: str = "BC:24:11", rng: random.Random
) -> dict[str, str]:
    """NICs get MACs, ``storage:SIZE`` disks get volume names, and smbios1 a uuid (no files made)."""
    result = dict(config)
    used: set[int] = set()
    for key in sorted(result):
        if key.startswith("net") and key[3:].isdigit():
            items = property_string_parse(result[key], default_key="model")
            first_key, first_value = next(iter(items.items()))
            model = first_value if first_key == "model" else first_key
            if first_key == "model" or not first_value:
                rest = {k: v for k, v in items.items() if k != first_key}
                result[key] = property_string_format({model: _random_mac(mac_prefix, rng), **rest}, default_key=None)
    for key in sorted(result):
        if DISK_KEY_RE.match(key) and result[key] != "none":
            items = property_string_parse(result[key], default_key="file")
            storage, _, size = items.get("file", "").partition(":")
            if NUMBER_RE.match(size):
                index = next(i for i in range(10_000) if i not in used)
                used.add(index)
                items["file"] = f"{storage}:vm-{vmid}-disk-{index}"
                items["size"] = f"{size}G"
                result[key] = property_string_format(items, default_key="file")
    if "smbios1" not in result:
        result["smbios1"] = f"uuid={uuid.UUID(int=rng.getrandbits(128), version=4)}"
    return result
