"""VM configuration files: description, format and parse, updates, normalisation, property strings."""

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
)
from vms.config_schema import SCHEMA

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
