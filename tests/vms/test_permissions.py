"""Which privileges a VM config change needs (pure rules, as qemu-server's check_vm_modify_config_perm).

The API, admin and qm matrices (tests/api/test_vm_config_permissions.py, tests/vms/test_admin.py)
check the same rules end to end with real ACLs; these pin the table itself.
"""

from __future__ import annotations

import pytest

from vms.permissions import (
    Either,
    Need,
    RootOnlyRule,
    bridge_rules,
    config_change_rules,
    create_rules,
    pool_change_rules,
)

VMID = 100


def vm(*privileges: str) -> Need:
    return Need(tuple(privileges))


def rules(set_=None, delete=(), current=None):
    return config_change_rules(VMID, current or {}, set_ or {}, delete)


def root_only(found) -> list[str]:
    return [rule.message for rule in found if isinstance(rule, RootOnlyRule)]


@pytest.mark.parametrize(
    ("key", "value", "privilege"),
    [
        ("cores", "2", "VM.Config.CPU"),
        ("sockets", "2", "VM.Config.CPU"),
        ("cpu", "host", "VM.Config.CPU"),
        ("cpulimit", "1", "VM.Config.CPU"),
        ("numa", "1", "VM.Config.CPU"),
        ("memory", "512", "VM.Config.Memory"),
        ("balloon", "0", "VM.Config.Memory"),
        ("shares", "100", "VM.Config.Memory"),
        ("vga", "std", "VM.Config.HWType"),
        ("machine", "q35", "VM.Config.HWType"),
        ("smbios1", "uuid=x", "VM.Config.HWType"),
        ("scsihw", "virtio-scsi-pci", "VM.Config.HWType"),
        ("name", "web", "VM.Config.Options"),
        ("description", "hi", "VM.Config.Options"),
        ("onboot", "1", "VM.Config.Options"),
        ("protection", "1", "VM.Config.Options"),
        ("tags", "a;b", "VM.Config.Options"),
        ("migrate_downtime", "0.3", "VM.Config.Options"),
        ("migrate_speed", "100", "VM.Config.Options"),
        ("agent", "1", "VM.Config.Options"),
        ("boot", "order=scsi0", "VM.Config.Disk"),
    ],
)
def test_each_key_needs_its_own_privilege_to_set_and_to_delete(key, value, privilege):
    assert rules({key: value}) == [vm(privilege)]
    assert rules(delete=[key], current={key: value}) == [vm(privilege)]
    assert rules(delete=[key]) == [vm(privilege)]  # deleting an unset key is checked all the same


def test_a_change_needs_every_privilege_of_its_keys_not_any_one():
    found = rules({"cores": "2", "memory": "512", "name": "x"}, delete=["vga"])
    assert set(found) == {
        vm("VM.Config.CPU"),
        vm("VM.Config.Memory"),
        vm("VM.Config.Options"),
        vm("VM.Config.HWType"),
    }


def test_startup_also_needs_sys_modify_on_the_root():
    assert rules({"startup": "order=1"}) == [vm("VM.Config.Options"), Need(("Sys.Modify",), "/")]


@pytest.mark.parametrize("key", ["args", "hookscript", "parent", "meta", "vmgenid", "lock", "kvm-args-future"])
def test_unlisted_keys_are_root_only_to_set_and_to_delete(key):
    assert root_only(rules({key: "x"})) == [f"only root can set '{key}' config"]
    assert root_only(rules(delete=[key], current={key: "x"})) == [f"only root can set '{key}' config"]


def test_drives_by_media_old_and_new_value():
    assert rules({"scsi0": "local:vm-100-disk-0"}) == [vm("VM.Config.Disk")]
    assert rules({"ide2": "local:iso/d.iso,media=cdrom"}) == [
        vm("VM.Config.CDROM"),
        Need(("Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.Audit"), "/storage/local", any_of=True),
    ]
    assert rules({"ide2": "none,media=cdrom"}) == [vm("VM.Config.CDROM")]
    assert rules({"ide0": "local:cloudinit"}) == [vm("VM.Config.Cloudinit", "VM.Config.CDROM")]
    # swapping the CD for a disk needs CDROM for the old value and Disk for the new one
    swapped = rules({"ide2": "local:vm-100-disk-1"}, current={"ide2": "none,media=cdrom"})
    assert swapped == [vm("VM.Config.CDROM"), vm("VM.Config.Disk")]
    assert rules(delete=["ide2"], current={"ide2": "none,media=cdrom"}) == [vm("VM.Config.CDROM")]
    assert rules(delete=["scsi0"], current={"scsi0": "local:vm-100-disk-0"}) == [vm("VM.Config.Disk")]
    assert rules({"ide2": "cdrom,media=cdrom"}) == [vm("VM.Config.CDROM"), Need(("Sys.Console",), "/")]


def test_allocating_a_disk_needs_space_on_that_storage():
    assert rules({"scsi1": "fast:32"}) == [vm("VM.Config.Disk"), Need(("Datastore.AllocateSpace",), "/storage/fast")]
    assert rules({"efidisk0": "local:1,efitype=4m"})[1] == Need(("Datastore.AllocateSpace",), "/storage/local")


def test_volumes_of_other_owners_need_what_proxmox_needs():
    other = rules({"scsi1": "local:vm-200-disk-0"})
    assert other == [
        vm("VM.Config.Disk"),
        Either(
            (
                (Need(("Datastore.Allocate",), "/storage/local"),),
                (Need(("Datastore.Audit",), "/storage/local"), Need(("VM.Config.Disk",), "/vms/200")),
            )
        ),
    ]
    assert rules({"scsi1": "local:100/vm-100-disk-3.qcow2"}) == [vm("VM.Config.Disk")]  # its own volume
    unknown = rules({"scsi1": "local:someones-disk.raw"})
    assert unknown[1] == Need(("Datastore.Allocate",), "/storage/local")
    backup = rules({"unused0": "local:backup/vzdump-qemu-300-2024_01_01-00_00_00.vma.zst"})
    assert backup == [
        Either(
            (
                (Need(("Datastore.Allocate",), "/storage/local"),),
                (Need(("Datastore.AllocateSpace",), "/storage/local"), Need(("VM.Backup",), "/vms/300")),
            )
        )
    ]
    assert rules(delete=["unused0"], current={"unused0": "local:vm-100-disk-9"}) == [vm("VM.Config.Disk")]


@pytest.mark.parametrize("value", ["/dev/sdb", "/dev/disk/by-id/ata-x,cache=none", "/dev/mapper/vg-lv"])
def test_host_block_devices_are_root_only(value):
    assert root_only(rules({"scsi1": value})) == ["Only root can pass arbitrary filesystem paths."]
    assert root_only(rules({"efidisk0": value})) == ["Only root can pass arbitrary filesystem paths."]


def test_serial_ports_socket_needs_hwtype_a_device_is_root_only():
    assert rules({"serial0": "socket"}) == [vm("VM.Config.HWType")]
    assert rules(delete=["serial0"], current={"serial0": "socket"}) == [vm("VM.Config.HWType")]
    assert root_only(rules({"serial0": "/dev/ttyS0"})) == ["only root can set 'serial0' config for real devices"]
    assert root_only(rules({"serial0": "socket"}, current={"serial0": "/dev/ttyS0"}))
    assert root_only(rules(delete=["serial1"], current={"serial1": "/dev/ttyUSB0"})) == [
        "only root can delete 'serial1' config for real devices"
    ]


def test_usb_spice_and_mappings_for_users_host_devices_for_root():
    assert rules({"usb0": "spice"}) == [vm("VM.Config.HWType")]
    assert rules({"usb0": "mapping=token,usb3=1"}) == [
        vm("VM.Config.HWType"),
        Need(("Mapping.Use",), "/mapping/usb/token"),
    ]
    for value in ("host=046d:c52b", "1-2.3", "0x046d:0xc52b"):
        assert root_only(rules({"usb1": value})) == ["only root can set 'usb1' config for real devices"]
    assert root_only(rules(delete=["usb1"], current={"usb1": "host=1-2"}))
    assert root_only(rules({"usb1": "spice"}, current={"usb1": "host=1-2"}))  # replacing a host device too


def test_pci_passthrough_only_mapped_for_users_and_never_a_romfile():
    assert root_only(rules({"hostpci0": "0000:01:00.0,pcie=1"})) == [
        "only root can set 'hostpci0' config for non-mapped devices"
    ]
    assert rules({"hostpci0": "mapping=gpu,pcie=1"}) == [
        Need(("Mapping.Use",), "/mapping/pci/gpu"),
        vm("VM.Config.HWType"),
    ]
    assert root_only(rules({"hostpci0": "mapping=gpu,romfile=vbios.bin"})) == ["only root@pam can set 'romfile' option"]
    assert root_only(rules(delete=["hostpci3"], current={"hostpci3": "01:00.0"}))


def test_nics_need_network_and_sdn_use_on_their_bridge_or_vlans():
    assert rules({"net0": "virtio,bridge=vmbr0"}) == [
        vm("VM.Config.Network"),
        Need(("SDN.Use",), "/sdn/zones/localnetwork/vmbr0"),
    ]
    assert bridge_rules("virtio=BC:24:11:00:00:01,bridge=vmbr1,tag=20") == [
        Need(("SDN.Use",), "/sdn/zones/localnetwork/vmbr1/20")
    ]
    assert bridge_rules("e1000,bridge=vmbr1,trunks=10-12;30") == [
        Need(("SDN.Use",), f"/sdn/zones/localnetwork/vmbr1/{tag}") for tag in (10, 11, 12, 30)
    ]
    assert bridge_rules("virtio") == []
    moved = rules({"net0": "virtio,bridge=vmbr2"}, current={"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0"})
    assert Need(("SDN.Use",), "/sdn/zones/localnetwork/vmbr0") in moved  # the old bridge too
    assert Need(("SDN.Use",), "/sdn/zones/localnetwork/vmbr2") in moved


def test_moving_between_pools_needs_pool_allocate_on_both():
    assert pool_change_rules(VMID, "a", "a") == []
    assert pool_change_rules(VMID, None, "b") == [
        Need(("Permissions.Modify", "VM.Allocate"), "/vms/100", any_of=True),
        Need(("Pool.Allocate",), "/pool/b"),
    ]
    assert pool_change_rules(VMID, "a", None)[1:] == [Need(("Pool.Allocate",), "/pool/a")]
    assert pool_change_rules(VMID, "a", "b")[1:] == [
        Need(("Pool.Allocate",), "/pool/a"),
        Need(("Pool.Allocate",), "/pool/b"),
    ]


def test_create_needs_allocate_on_the_vmid_or_pool_plus_every_key():
    plain = create_rules(VMID, {"memory": "512", "scsi0": "local:4"}, pool=None, storage=None)
    assert plain == [
        Need(("VM.Allocate",), "/vms/100"),
        vm("VM.Config.Memory"),
        vm("VM.Config.Disk"),
        Need(("Datastore.AllocateSpace",), "/storage/local"),
    ]
    pooled = create_rules(VMID, {}, pool="dev", storage="fast")
    assert pooled == [
        Either(
            (
                (Need(("VM.Allocate",), "/vms/100"), Need(("Pool.Allocate",), "/pool/dev")),
                (Need(("VM.Allocate",), "/pool/dev"),),
            )
        ),
        Need(("Datastore.AllocateSpace",), "/storage/fast"),
    ]
    assert root_only(create_rules(VMID, {"args": "-S"}, pool=None, storage=None)) == ["only root can set 'args' config"]
