"""Offline migration on real storage with the target node's commands run in-process (the lab test runs them over SSH).

The stand-in runs the very ``pvesm import`` / ``pvesm free`` the target would run, fed the stream
the migration writes; storages here are directories every node "has", so the copies land in
another storage (``targetstorage``) as they would on a real target.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from unittest import mock

import pytest
from django.core.management import CommandError, call_command

from authz.models import User
from cluster.models import Node
from replicator import client as replicator_client
from vms import services
from vms.config import ConfigError
from vms.exceptions import StorageError, VMError, VMLocked
from vms.models import VM, Storage
from vms.services import migration
from vms.services.migration import online, remote
from vms.storage import volume_path

pytestmark = [pytest.mark.usefixtures("replicator")]
FAR = "mig-far"
OWNER = "UPID:testnode:00000001:00000001:00000001:qmigrate:0:root@pam:"


class InProcessShell:
    """The target node's side, run here: ``/bin/true``, and the project's CLI given the streamed input."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.commands: list[list[str]] = []

    def run(self, argv: list[str], *, stdin=()) -> remote.Result:  # type: ignore[no-untyped-def]
        self.commands.append(argv)
        if argv == ["/bin/true"]:
            return remote.Result(0, "", "")
        prefix = remote.manage_argv()
        assert argv[: len(prefix)] == prefix, argv
        argv = argv[len(prefix) - 2 :]
        data = b"".join(stdin)
        out = io.StringIO()
        with mock.patch.object(sys, "stdin", io.TextIOWrapper(io.BytesIO(data))):
            try:
                call_command(*argv[2:], stdout=out)
            except CommandError as exc:
                return remote.Result(1, "", str(exc))
        return remote.Result(0, out.getvalue(), "")

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def root() -> User:
    return User.objects.get(userid="root@pam")


@pytest.fixture(scope="module")
def stores(root, tmp_path_factory) -> dict[str, Storage]:
    if not Node.objects.filter(name=FAR).exists():
        Node(name=FAR, nodeid=9961, joining=True).save()  # no votes: quorum unchanged
    broken = tmp_path_factory.mktemp("mgbroken") / "not-a-directory"
    broken.write_text("a file where the storage's directory should be")
    made = {}
    for storeid, options in {
        "mgsrc": {},
        "mgdst": {},
        "mgsh": {"shared": "1"},
        "mgbroken": {"path": str(broken)},
        "mghere": {"nodes": "testnode"},
    }.items():
        path = options.pop("path", None) or str(tmp_path_factory.mktemp(storeid))
        made[storeid] = services.create_storage(
            storeid, {"type": "dir", "path": path, "content": "images,iso", **options}, actor=root
        )
    yield made
    Node.objects.get(name=FAR).delete()


@pytest.fixture
def shell():
    shells: list[InProcessShell] = []

    def connector(node: str) -> InProcessShell:
        shells.append(InProcessShell(node))
        return shells[-1]

    remote.set_connector(connector)
    yield shells
    remote.set_connector(None)


def make_vm(root, vmid: int, config: dict[str, str]) -> VM:
    vm = services.create_vm(vmid, config, node="testnode", actor=root)
    for key in sorted(config):
        if key.startswith("scsi"):
            with open(volume_path(vm.config[key].split(",")[0]), "r+b") as handle:
                handle.seek(512 * 1024)
                handle.write(os.urandom(4096) + key.encode())  # data to find again in the copy
    return vm


def file_bytes(volid: str) -> bytes:
    return Path(volume_path(volid)).read_bytes()


def drive(vm: VM, key: str) -> str:
    return vm.config[key].split(",")[0]


def destroy(root, *vmids: int) -> None:
    for vmid in vmids:
        vm = VM.objects.filter(vmid=vmid).first()
        if vm is not None:
            vm.lock = vm.lock_owner = ""
            services.destroy_vm(vm, actor=root)


def test_offline_migration_copies_local_disks_moves_the_config_then_frees_the_sources(root, stores, shell):
    vm = make_vm(
        root, 7960, {"scsi0": "mgsrc:0.01,format=qcow2", "scsi1": "mgsrc:0.01,format=raw", "scsi2": "mgsh:0.01"}
    )
    local = {key: (drive(vm, key), file_bytes(drive(vm, key))) for key in ("scsi0", "scsi1")}
    shared = drive(vm, "scsi2")
    lines: list[str] = []
    plan = migration.check_migrate(vm, FAR, actor=root, targetstorage="mgsrc:mgdst", online=True, log=lines.append)
    assert lines == ["VM isn't running. Doing offline migration instead."]
    migration.migrate_vm(plan, owner=OWNER, user="root@pam", log=lines.append, bwlimit=100 * 1024)
    moved = VM.objects.get(vmid=7960)
    assert moved.node_id == FAR and moved.config_path == f"nodes/{FAR}/qemu-server/7960.conf"
    assert (moved.lock, moved.lock_owner) == ("", "")
    assert drive(moved, "scsi2") == shared  # shared: not copied
    for key, (source, data) in local.items():
        copy = drive(moved, key)
        assert copy == source.replace("mgsrc:", "mgdst:") and file_bytes(copy) == data
        assert not Path(volume_path(source)).exists(), f"{source} not freed"
    assert any(line.startswith("transferred ") for line in lines)
    assert lines[-1].startswith("migration finished successfully (duration ")
    (used,) = shell
    start = len(remote.manage_argv())
    assert [argv[start : start + 2] for argv in used.commands[1:]] == [["pvesm", "import"]] * 2
    destroy(root, 7960)


def test_a_failed_copy_frees_the_copies_made_and_changes_nothing(root, stores, shell):
    vm = make_vm(root, 7961, {"scsi0": "mgsrc:0.01,format=raw", "scsi1": "mghere:0.01,format=raw"})
    before = (vm.config_text(), {k: file_bytes(drive(vm, k)) for k in ("scsi0", "scsi1")})
    plan = migration.check_migrate(vm, FAR, actor=root, targetstorage="mgsrc:mgdst,mghere:mgbroken")
    lines: list[str] = []
    with pytest.raises(StorageError, match=r"import of 'mgbroken:7961/vm-7961-disk-0\.raw' on node 'mig-far' failed"):
        migration.migrate_vm(plan, owner=OWNER, user="root@pam", log=lines.append)
    after = VM.objects.get(vmid=7961)
    assert after.node_id == "testnode" and (after.lock, after.lock_owner) == ("", "")
    assert (after.config_text(), {k: file_bytes(drive(after, k)) for k in ("scsi0", "scsi1")}) == before
    assert not list(Path(stores["mgdst"].path, "images").glob("7961/*")), "the copy made was not freed"
    assert "freed 'mgdst:7961/vm-7961-disk-0.raw' on the target again" in lines
    assert lines[-1].startswith("ERROR: migration aborted (duration ")
    destroy(root, 7961)


def test_refusals_before_the_task(root, stores, shell):
    vm = make_vm(root, 7962, {"scsi0": "mghere:0.01", "ide2": "mgsrc:iso/x.iso,media=cdrom"})
    Path(stores["mgsrc"].path, "template/iso").mkdir(parents=True, exist_ok=True)
    with pytest.raises(ConfigError, match="no such cluster node 'nowhere'"):
        migration.check_migrate(vm, "nowhere", actor=root)
    with pytest.raises(ConfigError, match="target is local node"):
        migration.check_migrate(vm, "testnode", actor=root)
    with pytest.raises(VMError, match="can't migrate local cdrom drive"):
        migration.check_migrate(vm, FAR, actor=root, targetstorage="mgdst")
    vm = services.update_vm_config(vm, set_={}, delete="ide2", actor=root)
    with pytest.raises(StorageError, match="storage 'mghere' is not available on node 'mig-far'"):
        migration.check_migrate(vm, FAR, actor=root)
    with pytest.raises(ConfigError, match="invalid storage mapping"):
        migration.check_migrate(vm, FAR, actor=root, targetstorage="mgsrc:../x")
    no_quorum = mock.patch.object(replicator_client, "status", return_value={"quorate": False})
    with no_quorum, pytest.raises(VMError, match="cluster not ready - no quorum"):
        migration.check_migrate(vm, FAR, actor=root, targetstorage="mgdst")
    vm = services.update_vm_config(vm, set_={"serial0": "/dev/ttyS0"}, actor=root)
    with pytest.raises(VMError, match="can't migrate VM which uses local devices: serial0"):
        migration.check_migrate(vm, FAR, actor=root, targetstorage="mgdst")
    migration.check_migrate(vm, FAR, actor=root, targetstorage="mgdst", force=True)  # stopped, root: allowed
    vm.lock = "backup"
    with pytest.raises(VMLocked):
        migration.check_migrate(vm, FAR, actor=root, targetstorage="mgdst")
    destroy(root, 7962)


def test_an_import_stream_that_ends_early_leaves_no_volume(root, stores):
    from vms.storage import stream

    data = stream.HEADER.pack(4 * 1024 * 1024) + b"\x01" * 1024  # announces 4 MiB, brings 1 KiB
    with pytest.raises(StorageError, match="ended after 1024 of 4194304 bytes"):
        stream.import_volume("mgdst:7963/vm-7963-disk-0.raw", "raw+size", io.BytesIO(data))
    assert not list(Path(stores["mgdst"].path, "images").glob("7963/*"))
    with pytest.raises(StorageError, match="unsupported import format 'vmdk\\+size'"):
        stream.import_volume("mgdst:7963/vm-7963-disk-0.raw", "vmdk+size", io.BytesIO(data))


@pytest.mark.parametrize(
    ("config", "bwlimit", "expected"),
    [
        ({}, None, {"downtime-limit": 100, "max-bandwidth": 16 * 1024**3}),
        (
            {"migrate_downtime": "0.5", "migrate_speed": "10"},
            None,
            {"downtime-limit": 500, "max-bandwidth": 10 * 1024**2},
        ),
        ({"migrate_downtime": "0", "migrate_speed": "0"}, 4096, {"downtime-limit": 1, "max-bandwidth": 4096 * 1024}),
        ({"migrate_speed": "100"}, 1024, {"downtime-limit": 100, "max-bandwidth": 1024 * 1024}),
    ],
)
def test_the_vms_migrate_keys_and_bwlimit_set_qemus_parameters(config, bwlimit, expected):
    assert online._parameters(VM(vmid=1, config=config), bwlimit) == expected
