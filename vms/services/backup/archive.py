"""The backup archive: our own documented format, since upstream QEMU has no VMA writer.

A backup of VM ``<vmid>`` is one file in the ``dump/`` directory of a ``backup`` storage, named
``vzdump-qemu-<vmid>-<YYYY_MM_DD-HH_MM_SS>.tar[.zst|.gz|.lzo]`` (local time, Proxmox's naming
with ``tar`` where Proxmox writes ``vma``), a POSIX tar stream, compressed by ``zstd``, ``gzip``
or ``lzop`` (``compress`` zstd, gzip, lzo or 1; 0 leaves it plain), holding in this order:

- ``qemu-server.conf``: the VM's config as its file holds it, without ``lock``, ``parent``,
  ``unusedN``, snapshot sections or pending changes, plus one line per backed-up disk
  ``#qmdump#map:<drive>:drive-<drive>:<storeid>:<format>:`` (Proxmox's hint lines);
- ``disk-<drive>.raw`` for each backed-up disk: the disk's guest-visible bytes, raw (every disk
  but CD-ROMs and drives with ``backup=0``).

So an archive is read back with ``zstd -dc <archive> | tar x``. It is written as a stream
(``tarfile`` in stream mode on the compressor's stdin, each image read in chunks, never a whole
disk in memory) to a temporary name and renamed when complete. Beside it: ``<base>.log`` (the
VM's part of the task log), ``<archive>.notes`` and the ``<archive>.protected`` marker.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

from vms import config as vmconfig
from vms.exceptions import StorageError, VMError
from vms.qemu.blockjobs import render_bytes
from vms.storage.backups import parse_archive_name

Log = Callable[[str], None]
CHUNK = 1024 * 1024
CONFIG_MEMBER = "qemu-server.conf"
MAP_PREFIX = "#qmdump#map:"
# compress value -> (file suffix, compressor argv, decompressor argv); lzop only where installed.
COMPRESSORS: dict[str, tuple[str, list[str], list[str]]] = {
    "0": ("", [], []),
    "zstd": (".zst", ["zstd", "-q", "-c", "-T1"], ["zstd", "-q", "-d", "-c"]),
    "gzip": (".gz", ["gzip", "-c"], ["gzip", "-d", "-c"]),
    "lzo": (".lzo", ["lzop", "-c"], ["lzop", "-d", "-c"]),
}
SUFFIX_TOOLS = {"zst": "zstd", "gz": "gzip", "tgz": "gzip", "lzo": "lzo"}
DROPPED_KEYS = ("lock", "parent", "snapshots", "pending")


class ArchiveError(VMError):
    """An archive that cannot be written or read."""


def compressor(compress: str) -> tuple[str, list[str]]:
    """The suffix and argv for a ``compress`` value (``1`` is lzo, as Proxmox); lzo needs ``lzop``."""
    key = "lzo" if compress == "1" else compress
    if key not in COMPRESSORS:
        raise ArchiveError(f"unknown compression '{compress}'")
    suffix, argv, _ = COMPRESSORS[key]
    if argv and shutil.which(argv[0]) is None:
        raise ArchiveError(f"compression '{key}' is not available: '{argv[0]}' is not installed", {"compress": key})
    return suffix, argv


def base_name(vmid: int, when: float) -> str:
    return f"vzdump-qemu-{vmid}-{datetime.fromtimestamp(when).strftime('%Y_%m_%d-%H_%M_%S')}"


def archive_name(vmid: int, when: float, compress: str) -> str:
    return f"{base_name(vmid, when)}.tar{compressor(compress)[0]}"


# --- the config member ---------------------------------------------------------------------------


def backup_config(config: dict[str, str], disks: list[tuple[str, str, str]]) -> str:
    """``qemu-server.conf`` of the archive: ``disks`` are (drive, storeid, format) of the disks inside."""
    kept = {k: v for k, v in config.items() if k not in DROPPED_KEYS and not re.fullmatch(r"unused\d+", k)}
    text = vmconfig.format_config(kept)
    return text + "".join(f"{MAP_PREFIX}{key}:drive-{key}:{storeid}:{fmt}:\n" for key, storeid, fmt in disks)


def parse_backup_config(text: str) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """The config and the disk map (drive -> (storeid, format)) of an archive's ``qemu-server.conf``."""
    maps: dict[str, tuple[str, str]] = {}
    lines = []
    for line in text.splitlines():
        if line.startswith(MAP_PREFIX):
            fields = line[len(MAP_PREFIX) :].split(":")
            if len(fields) < 4:
                raise ArchiveError(f"invalid disk map line '{line}' in the backup config")
            maps[fields[0]] = (fields[2], fields[3])
        elif line.startswith("["):
            break  # a snapshot or pending section (never written here): not restored
        else:
            lines.append(line)
    return vmconfig.parse_config("\n".join(lines)), maps


# --- streams ---------------------------------------------------------------------------------------


class Meter:
    """Counts bytes through a transfer, logs every whole 10 % and holds it under ``bwlimit`` KiB/s."""

    def __init__(self, label: str, total: int, log: Log, bwlimit: int | None = None) -> None:
        self.label, self.total, self.log, self.bwlimit = label, total, log, bwlimit
        self.done, self.shown = 0, -1
        self.started = time.monotonic()

    def add(self, count: int) -> None:
        self.done += count
        elapsed = time.monotonic() - self.started
        if self.bwlimit:
            ahead = self.done / (self.bwlimit * 1024) - elapsed
            if ahead > 0:
                time.sleep(ahead)
        percent = self.done * 100 // self.total if self.total else 100
        if percent // 10 > self.shown:
            self.shown = percent // 10
            rate = self.done / elapsed if elapsed > 0 else 0
            self.log(
                f"{self.label}: {percent}% ({render_bytes(self.done)} of {render_bytes(self.total)})"
                f" in {int(elapsed)}s, {render_bytes(rate)}/s"
            )


class _ImageReader:
    """Exactly ``size`` bytes of ``handle`` (a shorter file padded with zeros), counted by ``meter``."""

    def __init__(self, handle: IO[bytes], size: int, meter: Meter) -> None:
        self.handle, self.left, self.meter = handle, size, meter

    def read(self, size: int = -1) -> bytes:
        want = min(self.left, size if size and size > 0 else CHUNK)
        data = self.handle.read(want) if want else b""
        if len(data) < want:
            data += bytes(want - len(data))
        self.left -= len(data)
        self.meter.add(len(data))
        return data


class _StreamReader:
    """Exactly ``size`` bytes of the pipe ``stream``, counted by ``meter``; ArchiveError if it ends early."""

    def __init__(self, stream: IO[bytes], size: int, meter: Meter) -> None:
        self.stream, self.size, self.left, self.meter = stream, size, size, meter

    def read(self, size: int = -1) -> bytes:
        want = min(self.left, size if size and size > 0 else CHUNK)
        parts, got = [], 0
        while got < want:
            data = self.stream.read(want - got)
            if not data:
                raise ArchiveError(
                    f"{self.meter.label}: the image ended after {self.size - self.left + got} of {self.size} bytes"
                )
            parts.append(data)
            got += len(data)
        self.left -= got
        self.meter.add(got)
        return b"".join(parts)


def _widen(pipe: IO[bytes] | None) -> None:
    """A 1 MiB pipe to the compressor (Linux's 64 KiB means 16 wake-ups per chunk); best effort."""
    if pipe is not None:
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)


class ArchiveWriter:
    """A tar stream into ``temp`` through the compressor; ``commit`` renames it to ``target``."""

    def __init__(self, target: Path, temp: Path, compress: str, *, ionice: int | None = None) -> None:
        self.target, self.temp = target, temp
        _, argv = compressor(compress)
        self._out = open(temp, "wb")  # noqa: SIM115  (closed by commit/abort)
        self._process: subprocess.Popen[bytes] | None = None
        sink: IO[bytes] = self._out
        if argv:
            if ionice is not None and shutil.which("ionice"):
                prefix = ["ionice", "-c", "3"] if ionice >= 8 else ["ionice", "-c", "2", "-n", str(ionice)]
                argv = [*prefix, *argv]
            self._process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=self._out, stderr=subprocess.PIPE)
            _widen(self._process.stdin)
            assert self._process.stdin is not None
            sink = self._process.stdin
        # bufsize: the stream's writes in 1 MiB blocks (tarfile's 10 KiB default halves the throughput)
        self._tar = tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK)  # noqa: SIM115
        self._tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # read and written in 1 MiB chunks

    def _info(self, name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, int(time.time()), 0o600
        return info

    def add_bytes(self, name: str, data: bytes) -> None:
        self._tar.addfile(self._info(name, len(data)), io.BytesIO(data))

    def add_image(self, name: str, path: str, size: int, meter: Meter) -> None:
        """The first ``size`` bytes of the raw image ``path`` (a shorter file is padded with zeros)."""
        with open(path, "rb") as handle:
            self._tar.addfile(self._info(name, size), _ImageReader(handle, size, meter))

    def add_stream(self, name: str, stream: IO[bytes], size: int, meter: Meter) -> None:
        """Exactly ``size`` bytes read from ``stream`` (a pipe); a shorter stream fails the archive."""
        self._tar.addfile(self._info(name, size), _StreamReader(stream, size, meter))

    def commit(self) -> Path:
        self._tar.close()
        if self._process is not None:
            assert self._process.stdin is not None and self._process.stderr is not None
            self._process.stdin.close()
            error = self._process.stderr.read().decode(errors="replace").strip()
            if self._process.wait() != 0:
                self._out.close()
                raise ArchiveError(f"compressor failed: {error or self._process.returncode}")
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        os.rename(self.temp, self.target)
        return self.target

    def abort(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        with contextlib.suppress(OSError):
            self._out.close()
        self.temp.unlink(missing_ok=True)


@contextlib.contextmanager
def open_archive(path: Path) -> Iterator[tarfile.TarFile]:
    """The archive's tar stream (decompressed by the tool its suffix names); members in order."""
    info = parse_archive_name(path.name)
    suffix = path.name.rsplit(".", 1)[-1]
    if info is None or not info.format.startswith("tar") or info.kind != "qemu":
        raise ArchiveError(f"'{path.name}' is not a VM backup archive of this format (vzdump-qemu-*.tar*)")
    tool = SUFFIX_TOOLS.get(suffix)
    process = None
    handle = open(path, "rb")  # noqa: SIM115  (closed below)
    source: IO[bytes] = handle
    try:
        if tool:
            argv = COMPRESSORS[tool][2]
            if shutil.which(argv[0]) is None:
                raise ArchiveError(f"unable to read '{path.name}': '{argv[0]}' is not installed")
            process = subprocess.Popen(argv, stdin=handle, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            _widen(process.stdout)
            assert process.stdout is not None
            source = process.stdout
        with tarfile.open(fileobj=source, mode="r|", bufsize=CHUNK) as tar:  # 1 MiB reads, not 10 KiB
            yield tar
        if process is not None and _drained(process.stdout):
            assert process.stderr is not None
            error = process.stderr.read().decode(errors="replace").strip()
            if process.wait() != 0:
                raise ArchiveError(f"unable to decompress '{path.name}': {error or process.returncode}")
        # else the reader stopped early (only the config was wanted): the decompressor is killed below
    except tarfile.TarError as exc:
        raise ArchiveError(f"unable to read '{path.name}': {exc}") from None
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        handle.close()


def _drained(stream: IO[bytes] | None) -> bool:
    """Whether only the tar's end padding was left unread (then the tool's status is checked);
    never reads more than a few blocks, so stopping after the first member costs nothing."""
    if stream is None:
        return True
    return any(not stream.read(CHUNK) for _ in range(4))


def read_config(path: Path) -> str:
    """The ``qemu-server.conf`` of an archive (its first member)."""
    with open_archive(path) as tar:
        member = tar.next()
        if member is None or member.name != CONFIG_MEMBER:
            raise ArchiveError(f"'{path.name}' does not start with {CONFIG_MEMBER}")
        data = tar.extractfile(member)
        if data is None:
            raise ArchiveError(f"'{path.name}': {CONFIG_MEMBER} is not a file")
        return data.read().decode()


def write_sparse(source: IO[bytes], path: str, size: int, meter: Meter) -> None:
    """``size`` bytes of ``source`` into the existing raw file ``path`` (all zeros already): zero chunks are skipped."""
    fd = os.open(path, os.O_WRONLY)
    try:
        offset = 0
        while offset < size:
            data = source.read(min(CHUNK, size - offset))
            if not data:
                raise StorageError(f"archive ended {size - offset} bytes early")
            if data.count(0) != len(data):
                os.pwrite(fd, data, offset)
            offset += len(data)
            meter.add(len(data))
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
