"""The node's own system log: what its daemons print, in one file, for ``/nodes/{node}/syslog|journal``.

Proxmox reads these from journald. Our daemons run under ``runnode``, which already copies each
child's output to ``<child>.log``; it also appends every line here as one record
``<seq>\\t<epoch>\\t<ident>\\t<pid>\\t<text>``, numbered (``seq``, the journal's cursor) and stamped
when the line arrived. The file is the node user's only (0600), and when it passes
``MAX_BYTES`` it becomes ``syslog.1`` (one generation kept), so the log never fills the disk.
No Django here: the runner writes without it, the API reads with it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FILENAME = "syslog"
MAX_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Record:
    seq: int
    time: float
    ident: str
    pid: int
    text: str

    def line(self, node: str) -> str:
        """As ``journalctl -o short`` prints it: ``Dec 06 16:12:52 node ident[pid]: text`` (local time)."""
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime(self.time))
        return f"{stamp} {node} {self.ident}[{self.pid}]: {self.text}"


def _parse(raw: bytes) -> Record | None:
    fields = raw.decode(errors="replace").rstrip("\n").split("\t", 4)
    if len(fields) != 5:
        return None  # a torn line (a crash mid-write) is skipped, never an error
    try:
        return Record(int(fields[0]), float(fields[1]), fields[2], int(fields[3]), fields[4])
    except ValueError:
        return None


def records(log_dir: Path) -> Iterator[Record]:
    """Every record, oldest first (the rotated generation, then the current file)."""
    for path in (log_dir / f"{FILENAME}.1", log_dir / FILENAME):
        try:
            with open(path, "rb") as stream:
                for raw in stream:
                    record = _parse(raw)
                    if record is not None:
                        yield record
        except FileNotFoundError:
            continue


def _last_seq(log_dir: Path, window: int = 65536) -> int:
    """The newest record's number: read from the end of the current file, else of the rotated one."""
    for path in (log_dir / FILENAME, log_dir / f"{FILENAME}.1"):
        try:
            with open(path, "rb") as stream:
                stream.seek(max(0, stream.seek(0, os.SEEK_END) - window))
                tail = stream.read().splitlines()
        except FileNotFoundError:
            continue
        numbers = [record.seq for record in map(_parse, tail) if record is not None]
        if numbers:
            return max(numbers)
    return 0


class Writer:
    """Appends records for the runner's tee threads (one lock; a record is one ``write``)."""

    def __init__(self, log_dir: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = log_dir / FILENAME
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self.seq = _last_seq(log_dir)  # cursors keep rising across restarts
        self.fd = self._open()

    def _open(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")  # end a record torn by a crash, so the next one starts on its own line
        return fd

    def write(self, ident: str, pid: int, text: str) -> None:
        clean = text.replace("\t", " ").replace("\n", " ").replace("\r", " ")
        with self.lock:
            self.seq += 1
            os.write(self.fd, f"{self.seq}\t{time.time():.6f}\t{ident}\t{pid}\t{clean}\n".encode())
            if os.fstat(self.fd).st_size >= self.max_bytes:
                os.replace(self.path, self.path.with_name(f"{FILENAME}.1"))
                os.close(self.fd)
                self.fd = self._open()

    def close(self) -> None:
        with self.lock:
            os.close(self.fd)
