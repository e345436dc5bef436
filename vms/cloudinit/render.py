"""The NoCloud data of a VM, built from its config: ``user-data``, ``network-config``, ``meta-data``.

Pure functions. Every value goes into the YAML as a single-quoted scalar, so no option (they
are single-line already) can add keys to what the guest's cloud-init runs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from vms import config_schema as schema
from vms.cloudinit.options import ssh_keys
from vms.property_strings import property_string_parse

TYPES = ("user", "network", "meta")
_LIST_SPLIT_RE = re.compile(r"[\s,;]+")


def quote(text: str) -> str:
    """A YAML single-quoted scalar (a quote is doubled; nothing else is special inside)."""
    return "'" + text.replace("'", "''") + "'"


def _items(text: str) -> list[str]:
    return [item for item in _LIST_SPLIT_RE.split(text) if item]


def hostname(vmid: int, config: Mapping[str, str]) -> str:
    return config.get("name") or f"VM{vmid}"


def user_data(vmid: int, config: Mapping[str, str]) -> str:
    """``#cloud-config``: host name, the default user's name, password hash and SSH keys, upgrades."""
    name = hostname(vmid, config)
    lines = ["#cloud-config", f"hostname: {quote(name)}", "manage_etc_hosts: true"]
    domains = _items(config.get("searchdomain", ""))
    if domains and "." not in name:
        lines.append(f"fqdn: {quote(name + '.' + domains[0])}")
    if config.get("ciuser"):
        lines.append(f"user: {quote(config['ciuser'])}")
    if config.get("cipassword"):
        lines.append(f"password: {quote(config['cipassword'])}")
    keys = ssh_keys(config["sshkeys"]) if config.get("sshkeys") else []
    if keys:
        lines.append("ssh_authorized_keys:")
        lines += [f"  - {quote(key)}" for key in keys]
    lines += ["chpasswd:", "  expire: false", "users:", "  - default"]
    lines.append(f"package_upgrade: {'true' if config.get('ciupgrade', '1') == '1' else 'false'}")
    return "\n".join(lines) + "\n"


def _mac(value: str) -> str:
    items = property_string_parse(value, default_key="model")
    first_key, first_value = next(iter(items.items()))
    mac = first_value if first_key in schema.NIC_MODELS else items.get("macaddr", "")
    return mac.lower()


def _subnets(ipconfig: str) -> list[str]:
    items = property_string_parse(ipconfig, default_key=None) if ipconfig else {}
    lines: list[str] = []
    for key, gateway, family in (("ip", "gw", "4"), ("ip6", "gw6", "6")):
        value = items.get(key)
        if value is None:
            continue
        if value == "dhcp":
            lines.append(f"      - type: dhcp{family}")
        elif value == "auto":
            lines.append("      - type: ipv6_slaac")
        else:
            lines += [f"      - type: static{'6' if family == '6' else ''}", f"        address: {quote(value)}"]
            if gateway in items:
                lines.append(f"        gateway: {quote(items[gateway])}")
    return lines


def network_config(config: Mapping[str, str]) -> str:
    """Network config version 1: one ``physical`` entry per NIC (``netN`` is ``ethN``, matched by
    MAC) with the addresses of its ``ipconfigN``, then the name servers and search domains."""
    lines = ["version: 1", "config:"]
    nets = sorted(int(key[3:]) for key in config if re.fullmatch(r"net\d+", key))
    for index in nets:
        lines += [
            "  - type: physical",
            f"    name: {quote(f'eth{index}')}",
            f"    mac_address: {quote(_mac(config[f'net{index}']))}",
        ]
        subnets = _subnets(config.get(f"ipconfig{index}", ""))
        if subnets:
            lines += ["    subnets:", *subnets]
    servers, domains = _items(config.get("nameserver", "")), _items(config.get("searchdomain", ""))
    if servers or domains:
        lines.append("  - type: nameserver")
        if servers:
            lines += ["    address:", *[f"      - {quote(server)}" for server in servers]]
        if domains:
            lines += ["    search:", *[f"      - {quote(domain)}" for domain in domains]]
    return "\n".join(lines) + "\n"


def meta_data(vmid: int, config: Mapping[str, str]) -> str:
    """``instance-id`` changes whenever the user or network data do, so cloud-init applies them again."""
    digest = hashlib.sha1((user_data(vmid, config) + network_config(config)).encode(), usedforsecurity=False)
    return f"instance-id: {digest.hexdigest()}\n"


def dump(vmid: int, config: Mapping[str, str], kind: str) -> str:
    """``cloudinit/dump``: one of the three documents."""
    if kind == "user":
        return user_data(vmid, config)
    if kind == "network":
        return network_config(config)
    if kind == "meta":
        return meta_data(vmid, config)
    raise ValueError(f"unknown type '{kind}'")
