"""Snapshot sections of the VM config file: written and read as qemu-server does, and the VM's file."""

from __future__ import annotations

import pytest

from vms.config import ConfigError, apply_update
from vms.models import VM
from vms.snapshot_config import (
    check_snapname,
    config_after_rollback,
    format_config_file,
    parse_config_file,
    snapshot_of,
    unlink_parent,
)

CONFIG = {"memory": "512", "scsi0": "local:100/vm-100-disk-0.qcow2,size=4G", "parent": "second", "description": "now"}
SNAPSHOTS = {
    "first": {"memory": "256", "scsi0": "local:100/vm-100-disk-0.qcow2,size=4G", "snaptime": "1700000000"},
    "second": {
        "memory": "512",
        "scsi0": "local:100/vm-100-disk-0.qcow2,size=4G",
        "parent": "first",
        "snaptime": "1700000100",
        "description": "with RAM\nsecond line",
        "vmstate": "local:100/vm-100-state-second.raw",
        "runningmachine": "pc-i440fx-7.2",
    },
}


def test_file_with_sections_as_qemu_server_writes_it():
    text = format_config_file(CONFIG, SNAPSHOTS)
    assert text == (
        "#now\n"
        "memory: 512\nparent: second\nscsi0: local:100/vm-100-disk-0.qcow2,size=4G\n"
        "\n[first]\n"
        "memory: 256\nscsi0: local:100/vm-100-disk-0.qcow2,size=4G\nsnaptime: 1700000000\n"
        "\n[second]\n"
        "#with RAM\n#second line\n"
        "memory: 512\nparent: first\nrunningmachine: pc-i440fx-7.2\nscsi0: local:100/vm-100-disk-0.qcow2,size=4G\n"
        "snaptime: 1700000100\nvmstate: local:100/vm-100-state-second.raw\n"
    )
    assert parse_config_file(text) == (CONFIG, SNAPSHOTS)


def test_parse_refuses_pending_duplicates_and_bad_snapstate():
    with pytest.raises(ConfigError, match="unsupported section"):
        parse_config_file("memory: 512\n\n[PENDING]\nmemory: 1024\n")
    with pytest.raises(ConfigError, match="unsupported section"):
        parse_config_file("memory: 512\n[special:cloudinit]\n")
    with pytest.raises(ConfigError, match="duplicate snapshot section"):
        parse_config_file("memory: 512\n[a1]\nmemory: 1\n[a1]\nmemory: 2\n")
    with pytest.raises(ConfigError) as caught:
        parse_config_file("memory: 512\n[a1]\nsnapstate: done\n")
    assert "[a1] snapstate" in caught.value.errors
    with pytest.raises(ConfigError) as caught:
        parse_config_file("[a1]\nnot a line\n")
    assert "[a1] line 1" in caught.value.errors
    # a description in a section belongs to it, not to the main config
    assert parse_config_file("memory: 1\n[s1]\n#hello\nmemory: 2\n") == (
        {"memory": "1"},
        {"s1": {"memory": "2", "description": "hello"}},
    )


def test_snapshot_names():
    assert check_snapname("Before_upgrade-2") == "Before_upgrade-2"
    for bad in ("a", "1abc", "x" * 41, "a b", "a.b", "current", "PENDING", "", None):
        with pytest.raises(ValueError):
            check_snapname(bad)


def test_parent_survives_config_updates():
    assert apply_update(CONFIG, {"memory": "1024"}, None)["parent"] == "second"


def test_copy_rollback_and_unlink():
    current = {**CONFIG, "unused0": "local:100/vm-100-disk-9.qcow2", "lock": "snapshot"}
    assert snapshot_of(current) == {"memory": "512", "scsi0": CONFIG["scsi0"], "parent": "second"}
    after = config_after_rollback(current, SNAPSHOTS["second"], "second")
    assert after == {
        "description": "now",
        "unused0": "local:100/vm-100-disk-9.qcow2",
        "memory": "512",
        "scsi0": CONFIG["scsi0"],
        "parent": "second",
    }
    snapshots = {name: dict(snap) for name, snap in SNAPSHOTS.items()}
    config = dict(CONFIG)
    unlink_parent(snapshots, config, "second")
    assert config["parent"] == "first"
    unlink_parent(snapshots, config, "first")
    assert "parent" not in config and "parent" not in snapshots["second"]


def test_the_vm_file_and_digest_cover_the_sections():
    vm = VM(vmid=100, node_id="testnode", config=dict(CONFIG), snapshots={})
    plain = vm.digest
    vm.snapshots = SNAPSHOTS
    assert vm.config_text() == format_config_file(CONFIG, SNAPSHOTS)
    assert vm.digest != plain
    vm.lock = "snapshot"
    assert "lock: snapshot\n" in vm.config_text().split("\n[")[0]
