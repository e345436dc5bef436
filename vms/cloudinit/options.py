"""Values of the cloud-init options, checked strictly (pure functions, no Django).

``ipconfigN`` is qemu-server's ``pve-qm-ipconfig``; ``sshkeys`` is URL-encoded OpenSSH public
keys, one per line; ``cipassword`` is stored as a crypt(3) hash, never as the password given.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
import warnings
from collections.abc import Mapping
from urllib.parse import unquote

from vms.property_strings import property_string_parse, shown

with warnings.catch_warnings():  # the stdlib binding of libcrypt (deprecated in 3.11, still shipped)
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

MAX_NETS = 32
CLOUDINIT_KEYS = ("cipassword", "citype", "ciupgrade", "ciuser", "nameserver", "searchdomain", "sshkeys")
# Already a crypt(3) hash (MD5, SHA-256/512, bcrypt): stored as given, as cloud-init itself decides.
HASHED_RE = re.compile(r"\$(?:[156]|2[ay])(\$.+){2}")
KEY_TYPE_RE = re.compile(r"ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp(?:256|384|521)|sk-[a-z0-9@.\-]+")
_LIST_SPLIT_RE = re.compile(r"[\s,;]+")
_DNS_NAME_RE = re.compile(
    r"(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)


def is_cloudinit_key(key: str) -> bool:
    """The options whose change the cloud-init drive carries (qemu-server's cloudinitoptions, ipconfigN)."""
    return key in CLOUDINIT_KEYS or bool(re.fullmatch(r"ipconfig([0-9]|[12][0-9]|3[01])", key))


def _interface(text: str, version: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if "/" not in text:
        raise ValueError("needs a prefix length (CIDR)")
    interface = ipaddress.ip_interface(text)
    if interface.version != version:
        raise ValueError(f"not an IPv{version} address")
    return interface


def check_ipconfig(text: str) -> str:
    """``ip=<IPv4/CIDR|dhcp>,gw=<IPv4>,ip6=<IPv6/CIDR|dhcp|auto>,gw6=<IPv6>``; a gateway needs a static address."""
    items = property_string_parse(text, default_key=None)
    unknown = sorted(set(items) - {"ip", "gw", "ip6", "gw6"})
    if unknown:
        raise ValueError(f"unknown property '{shown(unknown[0])}'")
    for key, version, dynamic in (("ip", 4, ("dhcp",)), ("ip6", 6, ("dhcp", "auto"))):
        gateway = "gw" if version == 4 else "gw6"
        value = items.get(key)
        if value is not None and value not in dynamic:
            try:
                _interface(value, version)
            except ValueError:
                raise ValueError(f"{key}: invalid IPv{version} address/CIDR '{shown(value)}'") from None
        if gateway in items:
            try:
                address = ipaddress.ip_address(items[gateway])
            except ValueError:
                raise ValueError(f"{gateway}: invalid IPv{version} address '{shown(items[gateway])}'") from None
            if address.version != version:
                raise ValueError(f"{gateway}: invalid IPv{version} address '{shown(items[gateway])}'")
            if value is None:
                raise ValueError(f"{gateway}: gateway specified without specifying an IP address")
            if value in dynamic:
                raise ValueError(f"{gateway}: gateway specified together with {value.upper()}")
    return text


def check_address_list(text: str) -> str:
    """``nameserver``: IP addresses separated by blanks, commas or semicolons."""
    for item in filter(None, _LIST_SPLIT_RE.split(text)):
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise ValueError(f"invalid IP address '{shown(item)}'") from None
    return text


def check_domain_list(text: str) -> str:
    """``searchdomain``: DNS names separated by blanks, commas or semicolons."""
    for item in filter(None, _LIST_SPLIT_RE.split(text)):
        if not _DNS_NAME_RE.fullmatch(item):
            raise ValueError(f"invalid DNS name '{shown(item)}'")
    return text


def ssh_keys(text: str) -> list[str]:
    """The public keys of a stored (URL-encoded) ``sshkeys`` value, one per entry."""
    return [line.strip() for line in unquote(text, errors="strict").splitlines() if line.strip()]


def _check_key_line(line: str) -> None:
    fields = line.split()
    for index, field in enumerate(fields[:2]):  # an options field may come before the type
        if KEY_TYPE_RE.fullmatch(field) and len(fields) > index + 1:
            try:
                blob = base64.b64decode(fields[index + 1], validate=True)
            except ValueError:
                break
            kind = field.encode()
            if blob[:4] == len(kind).to_bytes(4, "big") and blob[4 : 4 + len(kind)] == kind:
                return
            break
    raise ValueError(f"invalid SSH public key '{shown(line[:60])}'")


def check_sshkeys(text: str) -> str:
    """URL-encoded OpenSSH public keys; each line must be a key whose blob names its own type."""
    try:
        lines = ssh_keys(text)
    except UnicodeDecodeError:
        raise ValueError("invalid URL encoding") from None
    if not lines:
        raise ValueError("no SSH public key given")
    for line in lines:
        _check_key_line(line)
    return text


def hash_password(text: str) -> str:
    """``cipassword`` as stored: a SHA-512 crypt hash, unless it already is a crypt hash."""
    if HASHED_RE.fullmatch(text):
        return text
    salt = "$6$" + "".join(
        secrets.choice("./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") for _ in range(16)
    )
    hashed = crypt.crypt(text, salt)
    if not hashed or not hashed.startswith("$6$"):
        raise ValueError("unable to hash the password")
    return hashed


def check_cipassword(text: str) -> str:
    if not text:
        raise ValueError("empty password")
    return hash_password(text)


def masked(config: Mapping[str, str]) -> dict[str, str]:
    """A config as the API shows it: the password hash never leaves the node, as in qemu-server."""
    return {key: "**********" if key == "cipassword" else value for key, value in config.items()}
