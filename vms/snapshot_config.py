"""The VM config file with its snapshot sections, as qemu-server writes and reads it.

The main section comes first (``parent: <snap>`` naming the snapshot the current state grew
from), then one ``[<snapname>]`` section per snapshot, sorted by name, each a whole config of its
own plus ``snaptime``, ``parent``, ``vmstate``/``runningmachine``/``runningcpu`` (taken with RAM)
and ``snapstate`` while an operation on it is under way. Pure functions (no Django).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from vms.config import ConfigError, format_config, parse_config
from vms.property_strings import shown

# qemu-server's ``pve-snapshot-name`` (pve-configid, 2..40 characters).
SNAPNAME_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_\-]{1,39}")
SECTION_RE = re.compile(r"\[([a-z][a-z0-9_\-]+)\][ \t]*", re.IGNORECASE)
RESERVED = ("current", "pending")
# Keys a snapshot section holds beyond the config (never copied back into the current config).
SNAPSHOT_KEYS = ("snaptime", "snapstate", "vmstate", "runningmachine", "runningcpu", "description")
SNAPSTATES = ("prepare", "delete")

Snapshots = dict[str, dict[str, str]]


def check_snapname(name: object) -> str:
    """A snapshot name qemu-server accepts; ValueError with its wording otherwise."""
    if not isinstance(name, str) or not SNAPNAME_RE.fullmatch(name):
        raise ValueError(f"invalid format - invalid configuration ID '{shown(str(name))}'")
    if name.lower() in RESERVED:
        raise ValueError(f"unable to use snapshot name '{name}' (reserved name)")
    return name


def format_config_file(config: Mapping[str, str], snapshots: Mapping[str, Mapping[str, str]]) -> str:
    """The whole file: the main section, then ``[name]`` sections in name order."""
    parts = [format_config(config)]
    for name in sorted(snapshots):
        if not SNAPNAME_RE.fullmatch(name):
            raise ConfigError({"snapshots": f"invalid snapshot name '{shown(name)}'"})
        parts.append(f"\n[{name}]\n{format_config(snapshots[name])}")
    return "".join(parts)


def parse_config_file(text: str) -> tuple[dict[str, str], Snapshots]:
    """Inverse of ``format_config_file``: the main config and the snapshots by name."""
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith("["):
            sections[-1][1].append(line)
            continue
        match = SECTION_RE.fullmatch(line)
        if match is None or match.group(1).lower() in RESERVED:
            raise ConfigError({"config": f"line {number}: unsupported section '{shown(line)}'"})
        if any(name == match.group(1) for name, _ in sections):
            raise ConfigError({"config": f"line {number}: duplicate snapshot section '{match.group(1)}'"})
        sections.append((match.group(1), []))
    config = parse_config("\n".join(sections[0][1]))
    snapshots: Snapshots = {}
    for name, lines in sections[1:]:
        assert name is not None
        try:
            snapshots[name] = parse_config("\n".join(lines))
        except ConfigError as exc:
            raise ConfigError({f"[{name}] {key}": message for key, message in exc.errors.items()}) from None
        state = snapshots[name].get("snapstate")
        if state is not None and state not in SNAPSTATES:
            raise ConfigError({f"[{name}] snapstate": f"invalid snapshot state '{shown(state)}'"})
    return config, snapshots


def snapshot_of(config: Mapping[str, str]) -> dict[str, str]:
    """The config copied into a new snapshot (qemu-server's ``__snapshot_copy_config``)."""
    skipped = {"snapshots", "lock", "digest", *SNAPSHOT_KEYS}
    return {k: v for k, v in config.items() if k not in skipped and not re.fullmatch(r"unused\d+", k)}


def config_after_rollback(current: Mapping[str, str], snapshot: Mapping[str, str], snapname: str) -> dict[str, str]:
    """The current config a rollback leaves (``__snapshot_apply_config``): the snapshot's config,
    the current description and ``unusedN`` kept, ``parent`` the snapshot."""
    kept = {k: v for k, v in current.items() if k == "description" or re.fullmatch(r"unused\d+", k)}
    return {**kept, **snapshot_of(snapshot), "parent": snapname}


def unlink_parent(snapshots: Snapshots, config: dict[str, str], removed: str) -> None:
    """A deleted snapshot's children (and the current state) take its parent, or have none."""
    new_parent = snapshots.get(removed, {}).get("parent")
    for entry in [config, *(snap for name, snap in snapshots.items() if name != removed)]:
        if entry.get("parent") == removed:
            if new_parent:
                entry["parent"] = new_parent
            else:
                entry.pop("parent", None)
