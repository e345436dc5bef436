"""``qemu-img``: create, inspect, resize, convert and snapshot image files (explicit timeouts).

The one adapter around the tool; every failure is a StorageError carrying qemu-img's own message.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from typing import Any

from vms.exceptions import StorageError

QEMU_IMG = "qemu-img"
TIMEOUT = 60
_PROGRESS_RE = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")


def _run(args: list[str], timeout: float = TIMEOUT) -> str:
    try:
        result = subprocess.run([QEMU_IMG, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise StorageError(f"qemu-img {args[0]} timed out after {timeout} s") from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise StorageError(f"qemu-img {args[0]} failed: {message[-1] if message else result.returncode}")
    return result.stdout


def create(
    path: str, fmt: str, size: int | None, *, preallocation: str | None = None, backing: tuple[str, str] | None = None
) -> None:
    """A new image of ``size`` bytes (the file may exist already: it is overwritten).

    ``backing`` (file, format): a copy-on-write overlay of that file (a relative file is relative to
    ``path``'s directory), of its size when ``size`` is None.
    """
    args = ["create", "-q", "-f", fmt]
    if preallocation:
        args += ["-o", f"preallocation={preallocation}"]
    if backing:
        args += ["-b", backing[0], "-F", backing[1]]
    _run([*args, "--", path, *([str(size)] if size is not None else [])])


def info(path: str, fmt: str | None = None) -> dict[str, Any]:
    """``qemu-img info`` as JSON (shared lock, so a running VM's image can be read)."""
    args = ["info", "--output=json", "-U"]
    if fmt:
        args += ["-f", fmt]
    data = json.loads(_run([*args, "--", path]))
    if not isinstance(data, dict):
        raise StorageError(f"qemu-img info gave no information about '{path}'")
    return data


def resize(path: str, fmt: str, size: int) -> None:
    _run(["resize", "-q", "-f", fmt, "--", path, str(size)])


def convert(
    source: str,
    source_fmt: str,
    target: str,
    target_fmt: str,
    *,
    progress: Callable[[str], None] | None = None,
    rate_limit: int | None = None,
    snapshot: str | None = None,
) -> None:
    """Copy ``source`` into the existing image ``target`` (``-n``), logging progress by whole 10 %.

    ``rate_limit``: at most that many KiB/s (Proxmox's ``bwlimit``); ``snapshot``: the source as
    its internal (qcow2) snapshot of that name holds it (read with a shared lock: a running VM's).
    """
    extra = ["-r", f"{rate_limit}K"] if rate_limit else []
    extra += ["-U", "-l", f"snapshot.name={snapshot}"] if snapshot else []  # a snapshot is read while the VM may run
    argv = [QEMU_IMG, "convert", "-p", "-n", *extra, "-f", source_fmt, "-O", target_fmt, "--", source, target]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    shown = -10
    buffer = ""
    while chunk := process.stdout.read(64):
        buffer += chunk
        for match in _PROGRESS_RE.finditer(buffer):
            percent = float(match.group(1))
            if progress is not None and percent >= shown + 10:
                shown = int(percent // 10 * 10)
                progress(f"transferred {shown}%")
        buffer = buffer[-32:]
    error = process.stderr.read().strip()
    if process.wait() != 0:
        raise StorageError(f"qemu-img convert failed: {error.splitlines()[-1] if error else process.returncode}")


def snapshot(path: str, action: str, name: str) -> None:
    """``action`` is ``create``, ``delete`` or ``apply`` (rollback) of an internal qcow2 snapshot."""
    flag = {"create": "-c", "delete": "-d", "apply": "-a"}[action]
    _run(["snapshot", flag, name, "--", path])
