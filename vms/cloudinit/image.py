"""The cloud-init drive's ISO (NoCloud: volume label ``cidata``) on the VM's node.

The image is built from the config at every start (and by ``PUT {vm}/cloudinit``) into the
node's run directory, root's only (it holds the password hash). What it was built from is kept
beside it, so ``GET {vm}/cloudinit`` can show which values are still pending: changed since.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pycdlib

from vms import devices
from vms.cloudinit import render
from vms.cloudinit.options import is_cloudinit_key
from vms.config_schema import DISK_KEY_RE
from vms.exceptions import VMError
from vms.runtime_paths import run_dir

LABEL = "cidata"
MASK = "**********"


class CloudInitError(VMError):
    status = 500


def image_path(vmid: int) -> Path:
    return run_dir() / f"{int(vmid)}.cloudinit.iso"


def _state_path(vmid: int) -> Path:
    return run_dir() / f"{int(vmid)}.cloudinit.json"


def drive_key(config: Mapping[str, str]) -> str | None:
    """The VM's cloud-init drive (``ide2: local:cloudinit`` ...), if it has one."""
    for key, value in config.items():
        if DISK_KEY_RE.fullmatch(key) and not key.startswith("unused"):
            try:
                if devices.parse_drive(value).media == "cloudinit":
                    return key
            except ValueError:
                continue
    return None


def build_iso(files: Mapping[str, str]) -> bytes:
    """An ISO 9660 image with Rock Ridge and Joliet names, so every guest sees ``user-data`` as is."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=LABEL, sys_ident="LINUX", rock_ridge="1.09", joliet=3)
    for index, (name, text) in enumerate(sorted(files.items())):
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), f"/FILE{index};1", rr_name=name, joliet_path=f"/{name}")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def _write_private(path: Path, data: bytes) -> None:
    """Written whole under a temporary name, then renamed: a reader never sees half an image."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def tracked(config: Mapping[str, str]) -> dict[str, str]:
    """The values a cloud-init image carries, as ``GET {vm}/cloudinit`` compares them."""
    return {key: value for key, value in config.items() if is_cloudinit_key(key)}


def generate(vmid: int, config: Mapping[str, str]) -> Path | None:
    """Build the VM's cloud-init image from ``config``; None when it has no cloud-init drive."""
    if drive_key(config) is None:
        return None
    citype = config.get("citype", "nocloud")
    if citype != "nocloud":
        raise CloudInitError(f"citype '{citype}' is not supported (only nocloud)")
    files = {
        kind_file: render.dump(vmid, config, kind)
        for kind, kind_file in (("user", "user-data"), ("network", "network-config"), ("meta", "meta-data"))
    }
    path = image_path(vmid)
    _write_private(path, build_iso(files))
    _write_private(_state_path(vmid), json.dumps(tracked(config), sort_keys=True).encode())
    return path


def remove_image(vmid: int) -> None:
    """After QEMU exited (the values it was built from stay, for the pending view)."""
    image_path(vmid).unlink(missing_ok=True)


def forget(vmid: int) -> None:
    """The VM is gone from this node: nothing of its cloud-init stays."""
    image_path(vmid).unlink(missing_ok=True)
    _state_path(vmid).unlink(missing_ok=True)


def _generated(vmid: int) -> dict[str, str] | None:
    try:
        data = json.loads(_state_path(vmid).read_text())
    except (OSError, ValueError):
        return None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None


def pending(vmid: int, config: Mapping[str, str]) -> list[dict[str, Any]]:
    """``GET {vm}/cloudinit``: each option with the value the current image was built from
    (``value``), its new value when it changed since (``pending``), ``delete: 1`` when removed.
    Never built on this node (or not since it restarted): every value is pending."""
    current = tracked(config)
    built = _generated(vmid) or {}

    def shown(key: str, value: str) -> str:
        return MASK if key == "cipassword" else value

    result: list[dict[str, Any]] = []
    for key in sorted(set(current) | set(built), key=_order):
        item: dict[str, Any] = {"key": key}
        if key in built:
            item["value"] = shown(key, built[key])
        if key not in current:
            item["delete"] = 1
        elif built.get(key) != current[key]:
            item["pending"] = shown(key, current[key])
        result.append(item)
    return result


def _order(key: str) -> tuple[str, int]:
    stem = key.rstrip("0123456789")
    return stem, int(key[len(stem) :] or -1)
