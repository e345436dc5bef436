"""Proxmox property strings (``virtio=BC:24:11:00:00:01,bridge=vmbr0``) and values echoed safely in messages.

Pure functions (no Django), shared by the config validator, the device parsers and the permission rules.
"""

from __future__ import annotations

from collections.abc import Mapping

from vms import config_schema as schema


def shown(text: str, limit: int = 100) -> str:
    """``text`` safe to echo in a message or a log line: controls escaped, long values cut."""
    escaped = schema.CONTROL_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


def property_string_parse(value: str, *, default_key: str | None) -> dict[str, str]:
    """``a=1,b=2`` (the first item may omit its key: ``default_key``); ValueError when malformed."""
    result: dict[str, str] = {}
    for index, item in enumerate(value.split(",")):
        if not item:
            raise ValueError("empty item in property string")
        key, eq, val = item.partition("=")
        if not eq:
            if index != 0 or default_key is None:
                raise ValueError(f"missing value for '{shown(item)}'")
            key, val = default_key, item
        elif not schema.PROPERTY_KEY_RE.fullmatch(key):
            raise ValueError(f"invalid key '{shown(key)}'")
        if key in result:
            raise ValueError(f"duplicate key '{shown(key)}'")
        result[key] = val
    return result


def property_string_format(values: Mapping[str, str], *, default_key: str | None = None) -> str:
    """Inverse of ``property_string_parse``; the default key's value comes first without its name."""
    if any("," in str(v) for v in values.values()):
        raise ValueError("property values may not contain ','")
    items = [values[default_key]] if default_key is not None and default_key in values else []
    items += [f"{k}={v}" for k, v in values.items() if k != default_key]
    return ",".join(items)
