"""VM configuration rules (pure functions, no database)."""

from __future__ import annotations

import random

import pytest

from vms.config import (
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


@pytest.mark.parametrize("value", [100, "100", 999_999_999, "999999999", "4242"])
def test_valid_vmids(value):
    assert validate_vmid(value) == int(value)


@pytest.mark.parametrize(
    "value", [99, "99", 1_000_000_000, "0100", "+100", " 100", "100 ", "1e3", "1.0", True, None, "", "-100"]
)
def test_invalid_vmids(value):
    with pytest.raises(ConfigError) as info:
        validate_vmid(value)
    assert set(info.value.errors) == {"vmid"}


def test_all_bad_options_reported_at_once():
    with pytest.raises(ConfigError) as info:
        validate_options(
            {
                "memory": "1.5",
                "sockets": "17",
                "numa": "yes",
                "ostype": "dos",
                "name": "-bad-",
                "nope": "1",
                "cores": "2",
            },
            creating=True,
        )
    assert set(info.value.errors) == {"memory", "sockets", "numa", "ostype", "name", "nope"}
    assert info.value.errors["nope"] == NOT_IN_SCHEMA


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("name", "a" * 64),
        ("name", "web\u202eevil"),
        ("name", "web\x00"),
        ("memory", "15"),
        ("memory", str(4 * 1024 * 1024 + 1)),
        ("cpulimit", "129"),
        ("tags", "ok;not ok!"),
        ("net0", "virtio=ZZ:24:11:00:00:01"),
        ("net0", "bridge=vmbr0"),
        ("scsi0", "/etc/passwd"),
        ("scsi0", "local:../escape"),
        ("boot", "order=scsi0\nlock: backup"),
        ("args", "x" * 70_000),
    ],
)
def test_rejected_values(key, value):
    with pytest.raises(ConfigError) as info:
        validate_options({key: value}, creating=False)
    assert key in info.value.errors


def test_typed_json_values_are_normalised():
    assert validate_options({"cores": 2, "numa": 1, "memory": "current=2048"}, creating=False) == {
        "cores": "2",
        "numa": "1",
        "memory": "2048",
    }
    assert validate_options({"numa": True}, creating=False) == {"numa": "1"}  # a JSON true is 1
    with pytest.raises(ConfigError):
        validate_options({"numa": "True"}, creating=False)  # proxmoxer's str(True) is not, as in Proxmox


def test_description_cannot_inject_keys():
    evil = "first\nlock: backup\r\nmemory: 1\u2028name: x"
    config = validate_options({"description": evil, "memory": "512"}, creating=False)
    text = format_config(config)
    assert [line for line in text.splitlines() if not line.startswith("#")] == ["memory: 512"]
    assert parse_config(text) == config


def test_round_trip_and_digest():
    config = {
        "name": "db",
        "memory": "4096",
        "cores": "4",
        "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
        "description": "a\nb",
    }
    text = format_config(config)
    assert text.splitlines()[:2] == ["#a", "#b"]
    assert parse_config(text) == config
    assert config_digest(config) == config_digest(dict(reversed(list(config.items()))))
    assert config_digest(config) != config_digest({**config, "memory": "4097"})
    assert len(config_digest(config)) == 40


def test_apply_update_semantics():
    current = {"name": "a", "memory": "512", "net0": "virtio=BC:24:11:00:00:01"}
    assert apply_update(current, {"cores": "2"}, "net0,unused0") == {"name": "a", "memory": "512", "cores": "2"}
    assert apply_update(current, {}, ["memory"]) == {"name": "a", "net0": "virtio=BC:24:11:00:00:01"}
    with pytest.raises(ConfigError) as info:
        apply_update(current, {"memory": "1024"}, "memory;bogus")
    assert set(info.value.errors) == {"memory", "bogus"}
    assert current["memory"] == "512"


def test_normalise_for_create_is_deterministic_for_a_seed():
    config = {
        "net0": "virtio,bridge=vmbr0",
        "net1": "model=e1000",
        "scsi0": "local:32,discard=on",
        "virtio0": "local:8",
    }
    first = normalise_for_create(123, dict(config), rng=random.Random(7))
    second = normalise_for_create(123, dict(config), rng=random.Random(7))
    assert first == second
    assert first["net0"].startswith("virtio=BC:24:11:") and first["net0"].endswith(",bridge=vmbr0")
    assert first["net1"].startswith("e1000=BC:24:11:")
    disks = {first["scsi0"], first["virtio0"]}
    assert disks == {"local:vm-123-disk-0,discard=on,size=32G", "local:vm-123-disk-1,size=8G"}
    assert first["smbios1"].startswith("uuid=")
    validate_options(first, creating=False)


def test_property_strings():
    parsed = property_string_parse("virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0", default_key="model")
    assert parsed == {"virtio": "AA:BB:CC:DD:EE:FF", "bridge": "vmbr0"}
    assert property_string_parse("local:1,size=2G", default_key="file") == {"file": "local:1", "size": "2G"}
    assert property_string_format({"file": "local:1", "size": "2G"}, default_key="file") == "local:1,size=2G"
    for bad in ("a=1,,b=2", "a=1,a=2", "x,y"):
        with pytest.raises(ValueError):
            property_string_parse(bad, default_key="file")
