"""VM configuration rules (pure functions, no database)."""

from __future__ import annotations

import random
import re

import pytest

from vms.config import (
    MAX_CONFIG,
    NOT_IN_SCHEMA,
    ConfigError,
    apply_update,
    config_digest,
    format_config,
    normalise_for_create,
    parse_config,
    property_string_format,
    property_string_parse,
    validate_options,
    validate_vmid,
)
from vms.config_schema import SCHEMA


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
        ({"lock": "snapshot-delete"}, None),
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


# --- description and the file format -----------------------------------------------------------


def test_description_cannot_inject_keys():
    evil = "first\nlock: backup\r\nmemory: 1\u2028name: x\x0bprotection: 0\r[snap]\n#hash"
    config = validate_options({"description": evil, "memory": "512"}, creating=False)
    text = format_config(config)
    assert [line for line in text.splitlines() if not line.startswith("#")] == ["memory: 512"]
    assert [line for line in text.split("\n") if line and not line.startswith("#")] == ["memory: 512"]
    parsed = parse_config(text)
    assert parsed == config
    assert set(parsed) == {"description", "memory"}
    assert parsed["description"].split("\n")[1] == "lock: backup"


def test_description_lines_are_comments_first():
    config = {"name": "db", "description": "line one\n  indented\n\nlast ", "cores": "2"}
    text = format_config(config)
    assert text == "#line one\n#  indented\n#\n#last \ncores: 2\nname: db\n"
    assert parse_config(text) == config


def test_format_refuses_values_that_break_lines():
    for bad in ({"name": "x\nlock: backup"}, {"args": "a\rb"}, {"cpu": "a\u2028b"}, {"Bad Key": "1"}):
        with pytest.raises(ConfigError):
            format_config(bad)


def test_round_trip_and_digest():
    config = {
        "name": "db",
        "memory": "4096",
        "cores": "4",
        "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
        "scsi0": "local-lvm:vm-100-disk-0,size=32G",
        "tags": "a;b",
        "description": "a\nb",
    }
    text = format_config(config)
    assert text.endswith("\n") and text.splitlines()[:2] == ["#a", "#b"]
    keys = [line.split(":")[0] for line in text.splitlines() if not line.startswith("#")]
    assert keys == sorted(keys)
    assert parse_config(text) == config
    assert config_digest(config) == config_digest(dict(reversed(list(config.items()))))
    assert config_digest(config) != config_digest({**config, "memory": "4097"})
    assert re.fullmatch(r"[0-9a-f]{40}", config_digest(config))
    # stable across runs: SHA-1 of the exact bytes "memory: 512\n"
    assert config_digest({"memory": "512"}) == "21b62d471309a3f7474fdb8b45e9ae722dfe5e51"
    assert config_digest({}) == "da39a3ee5e6b4b0d3255bfef95601890afd80709"


def test_round_trip_of_random_validated_configs():
    rng = random.Random(1234)
    alphabet = "abcXYZ09 -_:=,;#[]\n\t€"
    for _ in range(200):
        description = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        config = validate_options(
            {
                "description": description,
                "memory": str(rng.randrange(16, 65536)),
                "cores": rng.randrange(1, 64),
                "args": "".join(rng.choice("abc -=,:") for _ in range(5)) + "x",
            },
            creating=False,
        )
        config = apply_update({}, config, None)
        assert parse_config(format_config(config)) == config
        assert set(parse_config(format_config(config))) <= {"description", "memory", "cores", "args"}


def test_parse_tolerates_blank_lines_and_crlf():
    assert parse_config("\n#hi\r\n\nmemory: 512\r\n\n   \ncores:2  \n") == {
        "description": "hi",
        "memory": "512",
        "cores": "2",
    }


@pytest.mark.parametrize(
    "text",
    [
        "memory: 512\n[snap1]\nmemory: 256\n",
        "[PENDING]\ncores: 2\n",
        "memory 512\n",
        "Memory: 512\n",
        " memory: 512\n",
        "memory: 512\nmemory: 1024\n",
        "#text\ndescription: other\n",
        "x" * (MAX_CONFIG + 1),
    ],
)
def test_parse_rejects(text):
    with pytest.raises(ConfigError):
        parse_config(text)


# --- apply_update -----------------------------------------------------------------------------


def test_apply_update_semantics():
    current = {"name": "a", "memory": "512", "net0": "virtio=BC:24:11:00:00:01"}
    assert apply_update(current, {"cores": "2"}, "net0,unused0") == {"name": "a", "memory": "512", "cores": "2"}
    assert apply_update(current, {}, ["memory"]) == {"name": "a", "net0": "virtio=BC:24:11:00:00:01"}
    assert apply_update(current, {"memory": 1024}, None) == {**current, "memory": "1024"}
    assert current == {"name": "a", "memory": "512", "net0": "virtio=BC:24:11:00:00:01"}


@pytest.mark.parametrize("delete", ["name memory", "name;memory", "name,, memory", ["name", "memory"], ["name,memory"]])
def test_delete_list_forms(delete):
    assert apply_update({"name": "a", "memory": "512", "cores": "1"}, {}, delete) == {"cores": "1"}


def test_apply_update_errors_all_at_once():
    current = {"memory": "512"}
    with pytest.raises(ConfigError) as info:
        apply_update(current, {"memory": "1024", "cores": "x", "zzz": "1"}, "memory;bogus,Bad!")
    assert info.value.errors["memory"] == "conflicting (set and delete)"
    assert info.value.errors["bogus"] == NOT_IN_SCHEMA
    assert info.value.errors["zzz"] == NOT_IN_SCHEMA
    assert "cores" in info.value.errors and "delete" in info.value.errors
    assert current == {"memory": "512"}


def test_apply_update_empty_description_removes_it():
    assert apply_update({"description": "old", "cores": "1"}, {"description": ""}, None) == {"cores": "1"}


def test_apply_update_whole_config_cap():
    current = {f"unused{i}": "local:vm-100-disk-" + "x" * 2050 for i in range(250)}
    with pytest.raises(ConfigError) as info:
        apply_update(current, {"args": "y" * 8000}, None)
    assert set(info.value.errors) == {"config"}
    assert len(format_config(current).encode()) <= MAX_CONFIG


# --- normalise_for_create ---------------------------------------------------------------------


def test_normalise_for_create_is_deterministic_for_a_seed():
    config = {
        "net0": "virtio,bridge=vmbr0",
        "net1": "model=e1000",
        "net2": "virtio=BC:24:11:AA:BB:CC",
        "scsi0": "local:32,discard=on",
        "virtio0": "local:8",
        "ide2": "none,media=cdrom",
    }
    first = normalise_for_create(123, dict(config), rng=random.Random(7))
    assert first == normalise_for_create(123, dict(config), rng=random.Random(7))
    assert first != normalise_for_create(123, dict(config), rng=random.Random(8))
    assert re.fullmatch(r"virtio=BC:24:11:[0-9A-F]{2}:[0-9A-F]{2}:[0-9A-F]{2},bridge=vmbr0", first["net0"])
    assert re.fullmatch(r"e1000=BC:24:11(:[0-9A-F]{2}){3}", first["net1"])
    assert first["net2"] == "virtio=BC:24:11:AA:BB:CC"
    assert first["scsi0"] == "local:vm-123-disk-0,discard=on,size=32G"
    assert first["virtio0"] == "local:vm-123-disk-1,size=8G"
    assert first["ide2"] == "none,media=cdrom"
    assert re.fullmatch(r"uuid=[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", first["smbios1"])
    assert validate_options(first, creating=False) == first
    assert config == {**config}  # input untouched
    assert "disk" not in config["scsi0"]


def test_normalise_for_create_skips_used_disk_indexes_and_keeps_smbios1():
    config = {
        "scsi0": "local:vm-50-disk-0",
        "scsi1": "local:4",
        "scsi2": "local:5",
        "scsi10": "local:6",
        "unused0": "local:vm-50-disk-2",
        "sata0": "other:vm-51-disk-1",
        "smbios1": "uuid=00000000-0000-4000-8000-000000000000",
    }
    result = normalise_for_create(50, config, rng=random.Random(0))
    assert result["scsi1"] == "local:vm-50-disk-1,size=4G"
    assert result["scsi2"] == "local:vm-50-disk-3,size=5G"
    assert result["scsi10"] == "local:vm-50-disk-4,size=6G"
    assert result["smbios1"] == config["smbios1"]
    assert result["sata0"] == "other:vm-51-disk-1"


def test_normalise_for_create_mac_prefix():
    result = normalise_for_create(100, {"net0": "virtio"}, mac_prefix="02:00:00", rng=random.Random(3))
    assert result["net0"].startswith("virtio=02:00:00:")
    with pytest.raises(ValueError):
        normalise_for_create(100, {"net0": "virtio"}, mac_prefix="01:00:5E", rng=random.Random(3))


# --- property strings -------------------------------------------------------------------------


def test_property_strings():
    parsed = property_string_parse("virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0", default_key="model")
    assert parsed == {"virtio": "AA:BB:CC:DD:EE:FF", "bridge": "vmbr0"}
    assert property_string_parse("local:1,size=2G", default_key="file") == {"file": "local:1", "size": "2G"}
    assert property_string_parse("a=b=c", default_key=None) == {"a": "b=c"}
    assert property_string_format({"file": "local:1", "size": "2G"}, default_key="file") == "local:1,size=2G"
    assert property_string_format({"size": "2G", "file": "local:1"}, default_key="file") == "local:1,size=2G"
    assert property_string_format({"a": "1", "b": "2"}) == "a=1,b=2"
    with pytest.raises(ValueError):
        property_string_format({"a": "1,b=2"})


@pytest.mark.parametrize("bad", ["a=1,,b=2", "a=1,a=2", "x,y", "", ",a=1", "a=1,", "1a=2", "x", "k y=1"])
def test_property_string_parse_rejects(bad):
    with pytest.raises(ValueError):
        property_string_parse(bad, default_key="file" if bad != "x" else None)


def test_schema_has_the_expected_families():
    counts = {
        prefix: sum(1 for key in SCHEMA if re.fullmatch(rf"{prefix}\d+", key))
        for prefix in ("ide", "sata", "scsi", "virtio", "unused", "net", "serial")
    }
    assert counts == {"ide": 4, "sata": 6, "scsi": 31, "virtio": 16, "unused": 256, "net": 32, "serial": 4}
    assert {"efidisk0", "tpmstate0", "vmgenid", "meta", "smbios1", "hookscript", "startup"} <= set(SCHEMA)


def test_normalise_for_create_drops_empty_description():
    result = normalise_for_create(100, {"description": "", "smbios1": "uuid=x"}, rng=random.Random(0))
    assert result == {"smbios1": "uuid=x"}
