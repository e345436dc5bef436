"""What the real-QEMU test modules share: a silent log, their storages, no QEMU left behind, a drive's volume."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from authz.models import User
from vms import services
from vms.models import VM, Storage
from vms.property_strings import property_string_parse
from vms.qemu import process


def quiet(line: str) -> None:
    pass


@contextlib.contextmanager
def dir_and_btrfs(
    root: User, prefix: str, directory: Path, btrfs_mount: Path, content: str
) -> Iterator[dict[str, Storage]]:
    """A ``dir`` storage ``<prefix>-dir`` and a ``btrfs`` one ``<prefix>-btrfs``, removed afterwards."""
    made = {
        "dir": services.create_storage(f"{prefix}-dir", {"path": str(directory), "content": content}, actor=root),
        "btrfs": services.create_storage(f"{prefix}-btrfs", {"type": "btrfs", "path": str(btrfs_mount)}, actor=root),
    }
    try:
        yield made
    finally:
        for storage in made.values():
            services.delete_storage(storage, actor=root)


def kill_qemus(vmids: Iterable[int]) -> None:
    """Every QEMU of ``vmids`` killed and its runtime files removed, whatever a test left."""
    for vmid in vmids:
        process.terminate(vmid, timeout=5, log=quiet)
        process.cleanup(vmid, {})


def file_of(vm: VM, key: str) -> str:
    """The volume id of drive ``key``."""
    return property_string_parse(vm.config[key], default_key="file")["file"]
