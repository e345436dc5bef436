"""Atomic, durable file replacement (``replicator.files``): mode from the first byte, fsyncs in order."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from replicator import files
from replicator.mirror import Mirror, MirrorFile
from tests.harness import REPO


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def synced(monkeypatch) -> list[str]:
    """What each ``os.fsync`` was called on ("dir:<path>" or "file:<path>"), in order; the fsync still happens."""
    calls: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        calls.append(f"{kind}:{os.readlink(f'/proc/self/fd/{fd}')}")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", spy)
    return calls


def test_write_fsyncs_the_file_then_the_directory_after_the_rename(tmp_path, synced, monkeypatch):
    target = tmp_path / "user.cfg"
    target.write_bytes(b"old")
    real_replace = os.replace

    def replace(source: Path, destination: Path) -> None:
        synced.append(f"rename:{destination}")
        real_replace(source, destination)

    monkeypatch.setattr(files.os, "replace", replace)
    files.atomic_write(target, b"new", mode=0o640)
    assert target.read_bytes() == b"new" and _mode(target) == 0o640
    assert len(synced) == 3
    assert synced[0].startswith(f"file:{tmp_path}/.user.cfg.") and synced[0].endswith(".tmp")
    assert synced[1:] == [f"rename:{target}", f"dir:{tmp_path}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user.cfg"]


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o644], ids=oct)
def test_the_mode_is_final_before_the_first_byte_whatever_the_umask(tmp_path, mode):
    target = tmp_path / "secret"
    old_umask = os.umask(0o022 if mode == 0o644 else 0)  # a permissive umask must not widen a secret
    try:
        with files.atomic_file(target, mode=mode) as handle:
            status = os.fstat(handle.fileno())
            assert (stat.S_IMODE(status.st_mode), status.st_size) == (mode, 0)
            handle.write(b"key material")
    finally:
        os.umask(old_umask)
    assert _mode(target) == mode and target.read_bytes() == b"key material"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives a file away")
def test_the_owner_is_set_before_the_first_byte(tmp_path):
    target = tmp_path / "owned"
    with files.atomic_file(target, mode=0o640, owner=(65534, 65534)) as handle:
        status = os.fstat(handle.fileno())
        assert (status.st_uid, status.st_gid, status.st_size) == (65534, 65534, 0)
        handle.write(b"x")
    assert (target.stat().st_uid, target.stat().st_gid) == (65534, 65534)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "corosync.conf"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.atomic_file(target) as handle:
        handle.write(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["corosync.conf"]


def test_a_symlink_is_replaced_in_one_rename_and_the_directory_fsynced(tmp_path, synced):
    link = tmp_path / "local"
    link.write_text("a file where the link belongs")
    files.atomic_symlink(link, "nodes/node1")
    assert os.readlink(link) == "nodes/node1"
    files.atomic_symlink(link, "nodes/node2")
    assert os.readlink(link) == "nodes/node2"
    assert synced == [f"dir:{tmp_path}", f"dir:{tmp_path}"]
    assert [p.name for p in tmp_path.iterdir()] == ["local"]


def test_the_mirror_fsyncs_each_changed_file_and_its_directory(tmp_path, synced):
    """DESIGN.md: tree files are replaced by write, fsync, rename (and the rename made durable)."""
    mirror = Mirror(tmp_path, "node1")
    assert mirror.write("nodes/node1/priv/pve-ssl.key", MirrorFile("key")) is True
    assert [call.split(":")[0] for call in synced] == ["file", "dir"]
    assert synced[1] == f"dir:{tmp_path}/nodes/node1/priv"
    assert _mode(tmp_path / "nodes/node1/priv/pve-ssl.key") == 0o600
    assert mirror.write("nodes/node1/priv/pve-ssl.key", MirrorFile("key")) is False  # unchanged: no write
    assert len(synced) == 2


def test_strace_shows_mode_write_fsync_rename_fsync_of_the_directory(tmp_path):
    """The real system calls of one atomic write: mode, write, fsync, rename, then an fsync of the directory."""
    log = tmp_path / "strace.log"
    target = tmp_path / "out" / "authkey"
    script = (
        "from pathlib import Path; from replicator.files import atomic_write; "
        f"atomic_write(Path({str(target)!r}), b'k', mode=0o400)"
    )
    traced = "trace=fchmod,write,fsync,rename,renameat,renameat2"
    subprocess.run(
        ["strace", "-yy", "-o", str(log), "-e", traced, sys.executable, "-c", script], cwd=REPO, check=True, timeout=60
    )
    directory = str(target.parent)
    temporary = re.escape(f"{directory}/.authkey.") + r"\w+\.tmp"
    calls = [line for line in log.read_text().splitlines() if directory in line]

    def first(pattern: str) -> int:
        found = [i for i, call in enumerate(calls) if re.match(pattern, call)]
        assert found, f"no {pattern} in {calls}"
        return found[0]

    mode = first(rf"fchmod\(\d+<{temporary}>, 0400\)")
    written = first(rf"write\(\d+<{temporary}>, \"k\", 1\)")
    synced = first(rf"fsync\(\d+<{temporary}>\)")
    renamed = first(rf"rename(at2?)?\(.*{temporary}.*{re.escape(str(target))}")
    directory_synced = first(rf"fsync\(\d+<{re.escape(directory)}>\)")
    assert mode < written < synced < renamed < directory_synced, calls
