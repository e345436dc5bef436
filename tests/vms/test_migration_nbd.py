"""Live storage migration's QEMU half with two real QEMUs on this node: the target exports its new
image over NBD while paused in incoming mode, the source mirrors its disk onto it while the guest
state is migrated, the mirror is ended after the memory, and the target's image then holds the
source's bytes. Plus the ``--nbd-disks`` option the source hands the target."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vms.exceptions import VMError
from vms.qemu import incoming, migration, process, qmp
from vms.runtime_paths import run_dir
from vms.services.migration.nbd import Mirrors

SOURCE, TARGET = 7792, 7793


def quiet(line: str) -> None:
    pass


def test_nbd_disks_option_round_trips_and_bad_specs_are_refused():
    disks = {"scsi0": ("local", "qcow2", 1073741824), "virtio1": ("fast", "raw", 52428800)}
    text = incoming.format_nbd_disks(disks)
    assert text == "scsi0=local:qcow2:1073741824,virtio1=fast:raw:52428800"
    assert incoming.parse_nbd_disks(text) == disks
    assert incoming.parse_nbd_disks("") == {}
    for bad in ("scsi0", "scsi0=local", "scsi0=local:qcow2:0", "scsi0=local:exe:10", "=local:raw:10", "scsi0=:raw:1"):
        with pytest.raises(VMError, match="invalid local disk"):
            incoming.parse_nbd_disks(bad)


def _drive(path: Path, fmt: str) -> list[str]:
    return [
        "-drive",
        f"if=none,id=drive-virtio0,file={path},format={fmt}",
        "-device",
        "virtio-blk-pci,drive=drive-virtio0",
    ]


def _launch(vmid: int, extra: list[str]) -> None:
    argv = process.command_for(vmid, {"name": f"nbd{vmid}", "memory": "128"}) + extra
    process.launch(vmid, argv, timeout=30, log=quiet)


@pytest.fixture
def images(tmp_path) -> Iterator[tuple[Path, Path]]:
    source, target = tmp_path / "source.qcow2", tmp_path / "target.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(source), "32M"], check=True)
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(3 * 1024 * 1024))
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -s {blob} 4M 3M", str(source)], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(target), "32M"], check=True)
    yield source, target
    for vmid in (SOURCE, TARGET):
        process.terminate(vmid, timeout=5, log=quiet)
        process.cleanup(vmid, {})
    for name in (f"{TARGET}.migrate", f"{TARGET}_nbd.migrate"):
        (run_dir() / name).unlink(missing_ok=True)


def test_a_disk_mirrored_over_nbd_during_the_migration_arrives_whole(images):
    source, target = images
    uri = f"unix:{run_dir()}/{TARGET}.migrate"
    _launch(SOURCE, _drive(source, "qcow2"))
    _launch(TARGET, _drive(target, "raw") + migration.incoming_args(uri))
    lines = incoming.export_disks(TARGET, {"virtio0": "x:vm-1-disk-0.raw"}, "unix", None)
    nbd_uri, volid = migration.parse_listen_lines("\n".join([*lines, f"migration listens on {uri}"])).disks["virtio0"]
    assert volid == "x:vm-1-disk-0.raw" and nbd_uri.startswith("nbd:unix:")

    log: list[str] = []
    mirrors = Mirrors(SOURCE, log.append)
    mirrors.start({"virtio0": nbd_uri}, bwlimit=None)
    assert "all 'mirror' jobs are ready" in log and any(line.startswith("drive-virtio0: transferred") for line in log)
    migration.migrate(SOURCE, uri, migration.parameters(), log=log.append, timeout=60)
    mirrors.finish()
    assert qmp.command(SOURCE, "query-block-jobs") == []
    incoming.stop_nbd(TARGET)
    incoming.stop_nbd(TARGET)  # a second stop finds none running and is no error
    qmp.command(TARGET, "cont")
    assert qmp.status(TARGET) == "running"
    for vmid in (SOURCE, TARGET):
        process.terminate(vmid, timeout=5, log=quiet)
    compared = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(source), str(target)],
                              capture_output=True, text=True)  # fmt: skip
    assert compared.returncode == 0, compared.stdout + compared.stderr


def test_cancelled_mirrors_leave_the_source_running_on_its_own_disk(images):
    source, target = images
    uri = f"unix:{run_dir()}/{TARGET}.migrate"
    _launch(SOURCE, _drive(source, "qcow2"))
    _launch(TARGET, _drive(target, "raw") + migration.incoming_args(uri))
    lines = incoming.export_disks(TARGET, {"virtio0": "x:vm-1-disk-0.raw"}, "unix", None)
    nbd_uri = migration.parse_listen_lines("\n".join([*lines, f"migration listens on {uri}"])).disks["virtio0"][0]
    mirrors = Mirrors(SOURCE, quiet)
    mirrors.start({"virtio0": nbd_uri}, bwlimit=None)
    mirrors.cancel()
    assert qmp.command(SOURCE, "query-block-jobs") == []
    (block,) = [b for b in qmp.command(SOURCE, "query-block") if b["device"] == "drive-virtio0"]
    assert block["inserted"]["file"] == str(source)
    assert qmp.status(SOURCE) == "running"
