"""A volume as a byte stream, to copy it to another node (Proxmox's ``pvesm export`` / ``pvesm import``).

The stream is Proxmox's ``raw+size`` / ``qcow2+size``: the data's length as a 64-bit
little-endian number, then the image file's bytes (a raw image's data, or the whole qcow2 file
with its internal snapshots). The importing node allocates a volume of that format on its
storage and writes the bytes into it; a stream that ends early or a failed write frees it again.
A qcow2 image with a backing file (a linked clone) has no stream: its base is not in it.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

from vms.exceptions import StorageError
from vms.models import Storage
from vms.property_strings import shown
from vms.storage import qemu_img, resolve, volume_format, volume_path, volumes

CHUNK = 1024 * 1024
HEADER = struct.Struct("<Q")
STREAM_FORMATS = {"raw": "raw+size", "qcow2": "qcow2+size"}
Log = Callable[[str], None]


def export_format(volid: str) -> str:
    """The stream format of ``volid`` (``raw+size`` or ``qcow2+size``); StorageError when it has none."""
    fmt = volume_format(volid)
    if fmt not in STREAM_FORMATS:
        raise StorageError(f"volume '{shown(volid)}': no export format for '{fmt}' images")
    path = volume_path(volid)
    if fmt == "qcow2" and qemu_img.info(path, "qcow2").get("backing-filename"):
        raise StorageError(f"volume '{shown(volid)}' is a linked clone: its base is not copied with it")
    return STREAM_FORMATS[fmt]


def export_chunks(volid: str, *, bwlimit_kib: int | None = None, log: Log | None = None) -> Iterator[bytes]:
    """The stream of ``volid``: header, then its file in chunks (``bwlimit_kib``: at most that many KiB/s)."""
    path = volume_path(volid)
    size = os.path.getsize(path)
    yield HEADER.pack(size)
    started = time.monotonic()
    sent, reported = 0, 0.0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk
            sent += len(chunk)
            elapsed = time.monotonic() - started
            if bwlimit_kib:
                ahead = sent / (bwlimit_kib * 1024) - elapsed
                if ahead > 0:
                    time.sleep(ahead)
                    elapsed += ahead
            if log is not None and (elapsed - reported >= 5 or sent == size):
                reported = elapsed
                rate = sent / elapsed / 1024 / 1024 if elapsed > 0 else 0.0
                percent = 100 * sent // size if size else 100
                log(f"transferred {_mib(sent)} of {_mib(size)} ({percent}%) in {elapsed:.1f}s, {rate:.1f} MiB/s")
    if sent != size:
        raise StorageError(f"volume '{shown(volid)}' changed while it was read ({sent} of {size} bytes)")


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"


def _read_exactly(stream: BinaryIO, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = stream.read(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def import_volume(volid: str, stream_format: str, stream: BinaryIO, *, allow_rename: bool = False) -> str:
    """Allocate ``volid`` (its storage and name; ``allow_rename``: the next free name when taken) here and
    fill it from ``stream``; the volume id it got. Nothing is left behind when it fails."""
    fmt = next((fmt for fmt, name in STREAM_FORMATS.items() if name == stream_format), None)
    if fmt is None:
        raise StorageError(f"unsupported import format '{shown(stream_format)}'")
    storage, _plugin, name = resolve(volid)
    if name.kind != "images" or name.vmid is None or name.base:
        raise StorageError(f"volume '{shown(volid)}' is not a VM image to import")
    if name.format != fmt:
        raise StorageError(f"volume '{shown(volid)}' is no {fmt} image")
    header = _read_exactly(stream, HEADER.size)
    if len(header) != HEADER.size:
        raise StorageError("import stream ended before its size header")
    (size,) = HEADER.unpack(header)
    new = _allocate(storage, name.vmid, fmt, name.name, max(size, 1), allow_rename)
    try:
        path = volume_path(new)
        with open(path, "r+b") as handle:
            handle.truncate(0)  # what the allocation wrote goes; holes stay holes (sparse images stay sparse)
            left = size
            while left:
                chunk = stream.read(min(CHUNK, left))
                if not chunk:
                    raise StorageError(f"import stream of '{shown(volid)}' ended after {size - left} of {size} bytes")
                if chunk.count(0) == len(chunk):
                    handle.seek(len(chunk), os.SEEK_CUR)
                else:
                    handle.write(chunk)
                left -= len(chunk)
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        volumes.free_volume(new)
        raise
    return new


def _allocate(storage: Storage, vmid: int, fmt: str, name: str, size: int, allow_rename: bool) -> str:
    try:
        return volumes.alloc_volume(storage, vmid, size, fmt=fmt, name=name)
    except StorageError as exc:
        if not allow_rename or "already exists" not in str(exc):
            raise
    return volumes.alloc_volume(storage, vmid, size, fmt=fmt)
