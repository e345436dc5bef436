"""VM configuration values: vmids, option types and ranges, NICs and disks (pure, no database)."""

from __future__ import annotations

import pytest

from vms.config import (
    NOT_IN_SCHEMA,
    ConfigError,
    apply_update,
    validate_options,
    validate_vmid,
)


def errors_of(params, *, creating=False):
    with pytest.raises(ConfigError) as info:
        validate_options(params, creating=creating)
    return info.value.errors


# --- vmid -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [100, "100", 999_999_999, "999999999", "4242"])
def test_valid_vmids(value):
    assert validate_vmid(value) == int(value)


@pytest.mark.parametrize(
    "value",
    [
        99,
        "99",
        0,
        1_000_000_000,
        "1000000000",
        10**40,
        "0100",
        "+100",
        " 100",
        "100 ",
        "100\n",
        "1e3",
        "1.0",
        100.0,
        "\u0661\u0660\u0660",  # Arabic-Indic digits: isdigit() but not canonical decimal
        True,
        False,
        None,
        "",
        "-100",
        [100],
    ],
)
def test_invalid_vmids(value):
    with pytest.raises(ConfigError) as info:
        validate_vmid(value)
    assert set(info.value.errors) == {"vmid"}


def test_vmid_range_message():
    with pytest.raises(ConfigError) as info:
        validate_vmid(99)
    assert "between 100 and 999999999" in info.value.errors["vmid"]
    with pytest.raises(ConfigError) as info:
        validate_vmid("abc")
    assert info.value.errors["vmid"] == "type check ('integer') failed - got 'abc'"


# --- ConfigError ------------------------------------------------------------------------------


def test_config_error_text_and_errors():
    exc = ConfigError({"memory": "type check ('integer') failed - got 'x'", "cores": "bad"})
    assert isinstance(exc, ValueError)
    assert exc.errors == {"memory": "type check ('integer') failed - got 'x'", "cores": "bad"}
    text = str(exc)
    assert text.splitlines()[0] == "Parameter verification failed."
    assert "memory: type check ('integer') failed - got 'x'" in text and "cores: bad" in text


def test_config_error_escapes_control_characters_in_keys():
    exc = ConfigError({"a\nlock": "x"})
    assert list(exc.errors) == ["a\\u000alock"]
    assert len(str(exc).splitlines()) == 2


# --- validate_options: types and ranges --------------------------------------------------------


def test_all_bad_options_reported_at_once():
    errors = errors_of(
        {"memory": "1.5", "sockets": "17", "numa": "yes", "ostype": "dos", "name": "-bad-", "nope": "1", "cores": "2"},
        creating=True,
    )
    assert set(errors) == {"memory", "sockets", "numa", "ostype", "name", "nope"}
    assert errors["nope"] == NOT_IN_SCHEMA
    assert errors["memory"] == "type check ('integer') failed - got '1.5'"
    assert errors["numa"] == "type check ('boolean') failed - got 'yes'"
    assert errors["ostype"].startswith("value 'dos' does not have a value in the enumeration 'other, wxp")


@pytest.mark.parametrize(
    "key", ["bogus", "net32", "scsi31", "ide4", "sata6", "virtio16", "unused256", "serial4", "Memory"]
)
def test_unknown_keys_rejected(key):
    assert errors_of({key: "1"}) == {key: NOT_IN_SCHEMA}


def test_non_string_keys_rejected():
    assert errors_of({1: "x"}) == {"1": NOT_IN_SCHEMA}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"cores": 2}, {"cores": "2"}),
        ({"cores": "1024"}, {"cores": "1024"}),
        ({"sockets": "16"}, {"sockets": "16"}),
        ({"memory": "16"}, {"memory": "16"}),
        ({"memory": 4 * 1024 * 1024}, {"memory": "4194304"}),
        ({"memory": "current=2048"}, {"memory": "2048"}),
        ({"balloon": "0"}, {"balloon": "0"}),
        ({"numa": 1, "kvm": "0", "acpi": True, "tablet": False}, {"numa": "1", "kvm": "0", "acpi": "1", "tablet": "0"}),
        ({"cpulimit": "1.50"}, {"cpulimit": "1.5"}),
        ({"cpulimit": "2.0"}, {"cpulimit": "2"}),
        ({"cpulimit": 0.25}, {"cpulimit": "0.25"}),
        ({"cpulimit": "128"}, {"cpulimit": "128"}),
        ({"ostype": "l26", "bios": "ovmf", "scsihw": "virtio-scsi-single"}, None),
        ({"name": "web-01.example.com"}, None),
        ({"name": "a" * 63}, None),
        ({"tags": "prod;web"}, None),
        ({"tags": "prod web,db"}, {"tags": "prod;web;db"}),
        ({"tags": "_x;a.b+c-d"}, None),
        ({"cpu": "cputype=host,flags=+aes"}, {"cpu": "host,flags=+aes"}),
        ({"agent": "1"}, None),
        ({"boot": "order=scsi0;ide2;net0"}, None),
        ({"args": "  -cpu host  "}, {"args": "-cpu host"}),
        ({"serial0": "socket", "vga": "std", "hotplug": "network,disk,usb"}, None),
        ({"parent": "snap1", "vmgenid": "1", "startup": "order=1,up=30"}, None),
        ({"migrate_downtime": "0.50", "migrate_speed": "100"}, {"migrate_downtime": "0.5", "migrate_speed": "100"}),
        ({"migrate_downtime": 0, "migrate_speed": 0}, {"migrate_downtime": "0", "migrate_speed": "0"}),
    ],
)
def test_valid_values_normalised(params, expected):
    assert validate_options(params, creating=True) == (params if expected is None else expected)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("memory", "15"),
        ("memory", str(4 * 1024 * 1024 + 1)),
        ("memory", "current=x"),
        ("memory", "current=2048,extra=1"),
        ("memory", "1.5"),
        ("memory", 1.5),
        ("memory", 2.0),
        ("memory", "0x400"),
        ("memory", "1e3"),
        ("memory", "01024"),
        ("memory", ""),
        ("memory", " 1024"),
        ("memory", "True"),
        ("memory", "9" * 5000),
        ("memory", 10**50),
        ("memory", None),
        ("memory", [1024]),
        ("memory", {"current": 1}),
        ("memory", b"1024"),
        ("balloon", "-1"),
        ("cores", "0"),
        ("cores", "1025"),
        ("sockets", "17"),
        ("cpulimit", "129"),
        ("migrate_downtime", "-0.1"),
        ("migrate_downtime", "fast"),
        ("migrate_speed", "1.5"),
        ("migrate_speed", "-1"),
        ("cpulimit", "-0.5"),
        ("cpulimit", "1."),
        ("cpulimit", ".5"),
        ("cpulimit", "nan"),
        ("cpulimit", float("inf")),
        ("numa", "True"),
        ("numa", "true"),
        ("numa", "2"),
        ("numa", 2),
        ("numa", ""),
        ("onboot", "yes"),
        ("ostype", "L26"),
        ("ostype", "l26 "),
        ("bios", "uefi"),
        ("scsihw", "virtio"),
        ("lock", "locked"),
        ("name", "a" * 64),
        ("name", "-bad"),
        ("name", "bad-"),
        ("name", "a..b"),
        ("name", "a_b"),
        ("name", ""),
        ("name", "web\u202eexe.txt"),
        ("name", "web\u2066x"),
        ("name", "wéb"),
        ("name", "web\x00"),
        ("tags", "ok;not ok!"),
        ("tags", "-lead"),
        ("tags", "a/b"),
        ("cpu", "host,,flags=x"),
        ("cpu", "host,cputype=kvm64"),
        ("agent", "1,x"),
        ("args", ""),
        ("args", "   "),
        ("args", "x" * 70_000),
        ("description", "x" * (8 * 1024 + 1)),
        ("hookscript", "x" * 1025),
        ("description", "nul\x00byte"),
        ("description", "escape\x1b[31m"),
        ("description", "lone \ud800 surrogate"),
    ],
)
def test_rejected_values(key, value):
    errors = errors_of({key: value})
    assert set(errors) == {key}


def test_range_and_length_messages():
    assert errors_of({"cores": "0"}) == {"cores": "value must be between 1 and 1024"}
    assert errors_of({"memory": "15"}) == {"memory": "value must be between 16 and 4194304"}
    assert errors_of({"hookscript": "x" * 1025}) == {"hookscript": "value may only be 1024 characters long"}
    assert errors_of({"onboot": "True"}) == {"onboot": "type check ('boolean') failed - got 'True'"}


def test_echoed_values_are_escaped_and_cut():
    message = errors_of({"memory": "1\x1b[2J" + "9" * 500})["memory"]
    assert "\x1b" not in message and len(message) < 200


@pytest.mark.parametrize(
    "char", ["\n", "\r", "\x00", "\t", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\u202e", "\ufeff"]
)
@pytest.mark.parametrize("key", ["name", "args", "boot", "cpu", "net0", "scsi0", "tags", "hookscript", "smbios1"])
def test_control_characters_rejected_outside_description(key, char):
    value = {"net0": "virtio,bridge=vmbr0", "scsi0": "local:8"}.get(key, "abc")
    errors = errors_of({key: value + char + "lock: backup"})
    assert set(errors) == {key}


def test_control_character_message():
    assert errors_of({"boot": "order=scsi0\nlock: backup"})["boot"].startswith("value contains control")


def test_value_cap_is_in_bytes_too():
    # 30,000 three-byte characters are within 64 KiB of characters but not of bytes
    with pytest.raises(ConfigError):
        validate_options({"args": "€" * 30_000}, creating=False)


# --- network devices --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("virtio", "virtio"),
        ("virtio=bc:24:11:aa:bb:cc", "virtio=BC:24:11:AA:BB:CC"),
        ("virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1,tag=10", None),
        ("e1000,bridge=vmbr1,link_down=1,mtu=9000,queues=4,rate=12.5", None),
        ("model=virtio,macaddr=BC:24:11:00:00:01,bridge=vmbr0", "virtio=BC:24:11:00:00:01,bridge=vmbr0"),
        ("model=vmxnet3,bridge=vmbr0", "vmxnet3,bridge=vmbr0"),
        ("virtio=,bridge=vmbr0", "virtio,bridge=vmbr0"),
        ("virtio,bridge=vmbr0,trunks=10-20;30", None),
    ],
)
def test_valid_nics(value, expected):
    assert validate_options({"net0": value}, creating=True) == {"net0": expected or value}


@pytest.mark.parametrize(
    "value",
    [
        "virtio=ZZ:24:11:00:00:01",
        "virtio=01:24:11:00:00:01",  # multicast
        "virtio=00:00:00:00:00:00",
        "virtio=BC:24:11:00:00",
        "bridge=vmbr0",
        "model=tulip",
        "tulip=BC:24:11:00:00:01",
        "virtio,tag=0",
        "virtio,tag=4095",
        "virtio,tag=abc",
        "virtio,firewall=yes",
        "virtio,mtu=65521",
        "virtio,queues=65",
        "virtio,bridge=vm br0",
        "virtio,script=/tmp/x",
        "virtio,e1000=BC:24:11:00:00:01",
        "virtio,bridge=vmbr0,bridge=vmbr1",
        "virtio,,bridge=vmbr0",
        "",
    ],
)
def test_invalid_nics(value):
    assert set(errors_of({"net0": value})) == {"net0"}


def test_nic_tag_message():
    assert "tag must be between 1 and 4094" in errors_of({"net3": "virtio,tag=9999"})["net3"]


# --- disks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("scsi0", "local-lvm:vm-100-disk-0,size=32G"),
        ("scsi30", "local:32"),
        ("virtio15", "local:0.5,cache=writeback,discard=on,iothread=1"),
        ("sata5", "ceph.pool:base-100-disk-0/vm-101-disk-0,ssd=1,mbps_rd=100,iops_wr_max=500"),
        ("ide2", "none,media=cdrom"),
        ("ide3", "cdrom,media=cdrom"),
        ("ide0", "local:iso/debian-12.iso,media=cdrom"),
        ("scsi1", "none"),
        ("scsi2", "/dev/disk/by-id/ata-SAMSUNG_123"),
        ("efidisk0", "local:1,efitype=4m,pre-enrolled-keys=1"),
        ("tpmstate0", "local:vm-100-disk-9,size=4M,version=v2.0"),
        ("unused255", "local:100/vm-100-disk-3.qcow2"),
        ("scsi3", "file=local:vm-100-disk-4,backup=0"),
    ],
)
def test_valid_disks(key, value):
    assert validate_options({key: value}, creating=True) == {key: value.removeprefix("file=")}


@pytest.mark.parametrize(
    "value",
    [
        "/etc/passwd",
        "/dev/../etc/shadow",
        "local:../escape",
        "local:images/../../etc",
        "local:/etc/passwd",
        "local:0",
        "local:-1",
        "local:",
        ":vm-100-disk-0",
        "1local:vm-100-disk-0",
        "local:vm 100",
        "local:x,bogus=1",
        "local:x,cache=maybe",
        "local:x,size=big",
        "size=32G",
        "local:x,,size=1G",
    ],
)
def test_invalid_disks(value):
    assert set(errors_of({"scsi0": value})) == {"scsi0"}


def test_dot_dot_message():
    assert "may not contain '..'" in errors_of({"scsi0": "local:../../etc/passwd"})["scsi0"]


# --- host devices, detached volumes, the lock ---------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("serial0", "socket"),
        ("serial3", "/dev/ttyS0"),
        ("usb0", "spice"),
        ("usb13", "host=046d:c52b,usb3=1"),
        ("usb1", "0x046d:0xc52b"),
        ("usb2", "1-2.3"),
        ("usb3", "mapping=token"),
        ("hostpci0", "0000:01:00.0,pcie=1,x-vga=1"),
        ("hostpci15", "host=01:00;02:00.1,rombar=0"),
        ("hostpci1", "mapping=gpu,mdev=nvidia-63,vendor-id=0x10de"),
        ("hostpci2", "01:00.0,romfile=vbios.bin,driver=keep"),
        ("vmgenid", "1"),
        ("vmgenid", "c5b8f3c5-0d2f-4e26-9d41-4c2f0a7f31de"),
    ],
)
def test_valid_host_devices(key, value):
    assert validate_options({key: value}, creating=False) == {key: value}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("serial0", "/tmp/evil.sock"),
        ("serial0", "/dev/../etc/shadow"),
        ("serial0", "tcp:1.2.3.4:80"),
        ("serial4", "socket"),
        ("usb0", "host=046d:c52b,mapping=token"),  # one or the other
        ("usb0", "usb3=1"),  # neither
        ("usb0", "host=/dev/bus/usb/001/002"),
        ("usb0", "spice,bogus=1"),
        ("usb14", "spice"),
        ("hostpci0", "0000:01:00.0,romfile=../../etc/shadow"),
        ("hostpci0", "0000:01:00.0,romfile=/usr/share/kvm/x.rom"),
        ("hostpci0", "01:00.0,mdev=a/b"),
        ("hostpci0", "01:00.0,vendor-id=10de"),
        ("hostpci0", "01:00.0,script=x"),
        ("hostpci0", "0000:01:00.0;"),
        ("hostpci0", "0000:0G:00.0"),
        ("hostpci0", "mapping=Bad"),
        ("hostpci16", "01:00.0"),
        ("vmgenid", "2"),
        ("vmgenid", "not-a-uuid"),
        ("unused0", "local:4"),  # a detached volume exists: never an allocation
        ("unused0", "/dev/sdb"),
        ("unused0", "none"),
        ("unused0", "local:cloudinit"),
    ],
)
def test_invalid_host_devices_and_detached_volumes(key, value):
    assert set(errors_of({key: value})) == {key}


def test_the_lock_is_never_set_or_removed_as_a_config_key():
    assert "qm unlock" in errors_of({"lock": "backup"})["lock"]
    with pytest.raises(ConfigError) as info:
        apply_update({"name": "x"}, {}, "lock")
    assert "qm unlock" in info.value.errors["lock"]
