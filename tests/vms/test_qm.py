"""``manage.py qm`` against the session's real replicator: every verb, and bad input changing nothing."""

from __future__ import annotations

import pytest

from replicator import client
from tests.harness import manage
from vms.models import VM

pytestmark = [pytest.mark.usefixtures("replicator")]


def qm(node_env, *args: str):
    return manage(node_env, "qm", *args, check=False)


def test_qm_create_set_config_list_destroy(node_env, etc_dir):
    created = qm(
        node_env,
        "create",
        "900",
        "--name",
        "cli-vm",
        "--memory",
        "1024",
        "--net0",
        "virtio,bridge=vmbr0",
        "--description",
        "line one\nline two",
    )
    assert created.returncode == 0, created.stderr
    assert "VM 900 created" in created.stdout
    assert qm(node_env, "set", "900", "--cores", "4", "--delete", "net0").returncode == 0
    shown = qm(node_env, "config", "900")
    assert shown.returncode == 0
    assert "cores: 4\n" in shown.stdout and "memory: 1024\n" in shown.stdout and "net0" not in shown.stdout
    assert shown.stdout.startswith("#line one\n#line two\n")
    listed = qm(node_env, "list")
    assert "cli-vm" in listed.stdout and "1024" in listed.stdout
    vm = VM.objects.get(vmid=900)
    client.wait_mirror(vm.version)
    assert (etc_dir / "nodes/testnode/qemu-server/900.conf").read_text() == shown.stdout
    pending = qm(node_env, "pending", "900")
    assert pending.returncode == 0, pending.stderr
    assert "cur cores: 4\n" in pending.stdout and "cur name: cli-vm\n" in pending.stdout
    destroyed = qm(node_env, "destroy", "900", "--purge", "1")
    assert destroyed.returncode == 0 and not VM.objects.filter(vmid=900).exists()
    assert "purging VM 900 from related configurations.." in destroyed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory", "lots"], "memory: type check ('integer') failed - got 'lots'"),
        (["--cores", "0"], "cores: value must be between 1 and 1024"),
        (["--onboot", "True"], "onboot: type check ('boolean') failed - got 'True'"),
        (["--bogus", "1"], "bogus: property is not defined in schema"),
        (["--name", "evil\nlock: backup"], "name: value contains control"),
        (["--net0", "virtio,tag=9999"], "tag must be between 1 and 4094"),
        (["--scsi0", "local:../../etc/passwd"], "may not contain '..'"),
        (["--cores", "2", "--delete", "cores"], "cores: conflicting (set and delete)"),
    ],
)
def test_qm_set_bad_values_change_nothing(node_env, args, message):
    if not VM.objects.filter(vmid=901).exists():
        assert qm(node_env, "create", "901", "--name", "keep", "--memory", "512", "--cores", "1").returncode == 0
    before = VM.objects.get(vmid=901)
    version = client.status()["version"]
    result = qm(node_env, "set", "901", *args)
    assert result.returncode != 0
    assert "Parameter verification failed" in result.stderr and message in result.stderr
    after = VM.objects.get(vmid=901)
    assert (after.version, after.config) == (before.version, before.config)
    assert client.status()["version"] == version


@pytest.mark.parametrize("vmid", ["99", "0100", "1000000000", "abc", "-5"])
def test_qm_bad_vmid(node_env, vmid):
    result = qm(node_env, "create", vmid, "--name", "x")
    assert result.returncode != 0 and "vmid" in result.stderr
    assert not VM.objects.filter(vmid=100).filter(config__name="x").exists()


def test_qm_errors_are_clear(node_env):
    assert qm(node_env, "create", "902").returncode == 0
    duplicate = qm(node_env, "create", "902")
    assert duplicate.returncode != 0 and "VM 902 already exists" in duplicate.stderr
    missing = qm(node_env, "config", "99999")
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    stale = qm(node_env, "set", "902", "--memory", "600", "--digest", "0" * 40)
    assert stale.returncode != 0 and "modified" in stale.stderr


def test_devices_added_by_an_update_are_completed(node_env):
    assert qm(node_env, "create", "903", "--scsi0", "local:2").returncode == 0
    result = qm(node_env, "set", "903", "--net1", "virtio,bridge=vmbr1", "--scsi1", "local:4")
    assert result.returncode == 0, result.stderr
    config = VM.objects.get(vmid=903).config
    assert config["scsi0"] == "local:903/vm-903-disk-0.raw,size=2G"
    assert config["scsi1"] == "local:903/vm-903-disk-1.raw,size=4G"
    assert config["net1"].startswith("virtio=BC:24:11:") and config["net1"].endswith(",bridge=vmbr1")


def test_qm_unlock_removes_a_leftover_lease_and_refuses_nothing_else(node_env):
    assert qm(node_env, "create", "905", "--name", "locked").returncode == 0
    vm = VM.objects.get(vmid=905)
    vm.lock, vm.lock_owner = "backup", "UPID:testnode:00001234:00000001:65A1B2C3:vzdump:905:root@pam:"
    vm.save(update_fields=["lock", "lock_owner"])
    refused = qm(node_env, "set", "905", "--cores", "2")
    assert refused.returncode != 0 and "locked (backup)" in refused.stderr
    unlocked = qm(node_env, "unlock", "905")
    assert unlocked.returncode == 0 and "unlocked (was 'backup', held by UPID:testnode:" in unlocked.stdout
    vm = VM.objects.get(vmid=905)
    assert (vm.lock, vm.lock_owner) == ("", "")
    assert qm(node_env, "set", "905", "--cores", "2").returncode == 0
    again = qm(node_env, "unlock", "905")
    assert again.returncode == 0 and "is not locked" in again.stdout
    version = VM.objects.get(vmid=905).version
    assert qm(node_env, "unlock", "905", "--force", "1").returncode != 0
    assert VM.objects.get(vmid=905).version == version
    assert qm(node_env, "destroy", "905").returncode == 0


def test_qm_writes_through_the_services_as_root_with_an_audit_entry_each(node_env):
    from cluster.models import ClusterLogEntry

    assert qm(node_env, "create", "906", "--name", "rooted").returncode == 0
    created = VM.objects.get(vmid=906)
    assert ClusterLogEntry.objects.get(version=created.version).msg == "VM 906 created on testnode"
    # root@pam may use what reaches the host; the lock is still not a config key, even for root
    result = qm(node_env, "set", "906", "--args", "-no-hpet", "--serial0", "/dev/ttyS0", "--usb0", "host=1-2")
    assert result.returncode == 0, result.stderr
    vm = VM.objects.get(vmid=906)
    assert (vm.config["args"], vm.config["serial0"], vm.config["usb0"]) == ("-no-hpet", "/dev/ttyS0", "host=1-2")
    entry = ClusterLogEntry.objects.get(version=vm.version)
    assert entry.user == "root@pam"
    assert entry.msg == "update VM 906: -args -no-hpet -serial0 /dev/ttyS0 -usb0 host=1-2"
    refused = qm(node_env, "set", "906", "--lock", "backup")
    assert refused.returncode != 0 and "qm unlock" in refused.stderr
    assert VM.objects.get(vmid=906).version == vm.version
    vm.lock, vm.lock_owner = "migrate", ""
    vm.save(update_fields=["lock", "lock_owner"])
    assert qm(node_env, "unlock", "906").returncode == 0
    unlocked = VM.objects.get(vmid=906)
    assert unlocked.lock == ""
    entry = ClusterLogEntry.objects.get(version=unlocked.version)
    assert (entry.user, entry.msg, entry.tag) == ("root@pam", "VM 906 unlocked (was 'migrate')", "qmunlock")
    assert qm(node_env, "destroy", "906").returncode == 0
    assert ClusterLogEntry.objects.filter(msg="VM 906 destroyed", user="root@pam").exists()


def test_a_bare_flag_is_a_boolean_set():
    """``qm destroy 100 --purge`` as Proxmox's CLI takes it: a flag with no value (last, or before
    another option) is 1; a value that is given is kept."""
    from django.core.management.base import CommandError

    from vms.management.commands.qm import _options

    assert _options(["--purge"]) == {"purge": "1"}
    assert _options(["--purge", "--skiplock", "0"]) == {"purge": "1", "skiplock": "0"}
    assert _options(["--memory", "-1"]) == {"memory": "-1"}
    with pytest.raises(CommandError, match="twice"):
        _options(["--purge", "--purge"])
