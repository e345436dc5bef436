"""A real btrfs file system on a loop device for the storage tests (always unmounted and detached)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SIZE = 256 * 1024 * 1024  # mkfs.btrfs wants about 110 MiB at least


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout.strip()


@pytest.fixture(scope="session")
def btrfs_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The mount point of a fresh btrfs on ``losetup -f`` over a sparse file."""
    base = tmp_path_factory.mktemp("btrfs")
    image = base / "fs.img"
    with open(image, "wb") as handle:
        handle.truncate(SIZE)
    device = _run("losetup", "-f", "--show", str(image))
    try:
        _run("mkfs.btrfs", "-q", device)
        mount = base / "mnt"
        mount.mkdir()
        _run("mount", "-t", "btrfs", device, str(mount))
        try:
            yield mount
        finally:
            _run("umount", str(mount))
    finally:
        _run("losetup", "-d", device)
