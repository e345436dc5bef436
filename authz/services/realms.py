"""Authentication realms (``domains.cfg``): checked, audited, one change set each.

Realm.Allocate on ``/access/realm``, as Proxmox. A realm's type is fixed when it is created:
``pam`` and ``pve`` are the built-in realms, never created, retyped or removed, and only
``ldap`` and ``ad`` realms can be added. (root@pam never authenticates through a realm row at
all: see ``authz.authentication.authenticate_password``.) Options are checked per type, so nothing
that could break a ``domains.cfg`` line or point the LDAP client at a relative path is stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.db import transaction

from authz import audit, delegation, ids
from authz.exceptions import AccessError
from authz.models import ACLEntry, KeyMaterial, Realm

CLUSTER = "cluster"
BUILTIN = ("pam", "pve")
ADDABLE_TYPES = ("ldap", "ad")
LDAP_OPTIONS = (
    "server1",
    "server2",
    "port",
    "mode",
    "secure",
    "verify",
    "capath",
    "base_dn",
    "user_attr",
    "bind_dn",
    "filter",
    "user_classes",
    "group_dn",
    "group_name_attr",
    "group_filter",
    "group_classes",
)
OPTIONS = {"pam": (), "pve": (), "ldap": LDAP_OPTIONS, "ad": ("domain", *LDAP_OPTIONS)}
REQUIRED = {"ldap": ("server1", "base_dn", "user_attr"), "ad": ("server1", "domain")}
_HOST_RE = re.compile(r"[A-Za-z0-9.\-:\[\]]{1,255}")
_DOMAIN_RE = re.compile(r"[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*")
_ATTR_RE = re.compile(r"[A-Za-z][A-Za-z0-9\-]{0,127}")


def password_path(realm: str) -> str:
    """Where a realm's bind password is kept (under ``priv/``: never in ``domains.cfg``)."""
    return f"priv/realm/{realm}.pw"


def _text(name: str, value: Any, max_length: int = 4096) -> str:
    text = str(value)
    if len(text) > max_length or not text.isprintable():
        raise AccessError(f"invalid value for {name}")
    return text


def _option(key: str, value: Any) -> str:
    text = _text(key, value, 1024)
    valid: Callable[[], object] = {
        "server1": lambda: _HOST_RE.fullmatch(text),
        "server2": lambda: _HOST_RE.fullmatch(text),
        "port": lambda: text.isdigit() and 1 <= int(text) <= 65535,
        "mode": lambda: text in ("ldap", "ldaps", "ldap+starttls"),
        "secure": lambda: text in ("0", "1"),
        "verify": lambda: text in ("0", "1"),
        "capath": lambda: text.startswith("/") and "/../" not in f"{text}/",
        "domain": lambda: _DOMAIN_RE.fullmatch(text),
        "user_attr": lambda: _ATTR_RE.fullmatch(text),
        "group_name_attr": lambda: _ATTR_RE.fullmatch(text),
    }.get(key, lambda: bool(text))
    if not valid():
        raise AccessError(f"invalid value for {key}: '{text}'")
    return text


def _options(realm_type: str, options: dict[str, Any]) -> dict[str, str]:
    allowed = OPTIONS[realm_type]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise AccessError(f"option '{unknown[0]}' is not allowed for a realm of type '{realm_type}'")
    checked = {key: _option(key, value) for key, value in options.items()}
    missing = [key for key in REQUIRED.get(realm_type, ()) if not checked.get(key)]
    if missing:
        raise AccessError(f"option '{missing[0]}' is required for a realm of type '{realm_type}'")
    return checked


def _save(realm: Realm, actor: Any, message: str, password: str | None, delete_password: bool) -> None:
    """The realm, its bind password and the other realms' ``default`` flag: one change set."""
    with transaction.atomic(using=CLUSTER):
        if realm.default:
            for other in Realm.objects.filter(default=True).exclude(realm=realm.realm):
                other.default = False
                other.save(update_fields=["default"])
        realm.save()
        key = KeyMaterial.objects.filter(path=password_path(realm.realm)).first()
        if password is not None:
            key = key or KeyMaterial(path=password_path(realm.realm))
            key.content = password + "\n"
            key.save()
        elif delete_password and key is not None:
            key.delete()
        audit.record(actor, message)


def _password(password: str | None) -> str | None:
    if password is None:
        return None
    if not password or len(password) > 4096 or not password.isprintable():
        raise AccessError("invalid bind password")
    return password


def add_realm(
    realm: str,
    realm_type: str,
    *,
    actor: Any,
    comment: str = "",
    default: bool = False,
    options: dict[str, Any] | None = None,
    password: str | None = None,
) -> Realm:
    ids.check_realm_id(realm)
    delegation.check(actor, "/access/realm", ["Realm.Allocate"])
    if realm in BUILTIN:
        raise AccessError(f"unable to use reserved name '{realm}'")
    if realm_type not in ADDABLE_TYPES:
        raise AccessError(f"unable to create a realm of type '{realm_type}' (only {' or '.join(ADDABLE_TYPES)})")
    if Realm.objects.filter(realm=realm).exists():
        raise AccessError(f"domain '{realm}' already exists")
    row = Realm(
        realm=realm,
        type=realm_type,
        comment=_text("comment", comment),
        default=bool(default),
        options=_options(realm_type, dict(options or {})),
    )
    _save(row, actor, f"added realm '{realm}' (type {realm_type})", _password(password), False)
    return row


def modify_realm(
    realm: str,
    *,
    actor: Any,
    realm_type: str | None = None,
    comment: str | None = None,
    default: bool | None = None,
    options: dict[str, Any] | None = None,
    delete: Any = (),
    password: str | None = None,
    version: int | None = None,
) -> Realm:
    """Proxmox's realm update: ``options`` are set, the keys in ``delete`` removed; the type never changes."""
    row = Realm.objects.filter(realm=realm).first()
    if row is None:
        raise AccessError(f"domain '{realm}' does not exist")
    delegation.check(actor, "/access/realm", ["Realm.Allocate"])
    if realm_type is not None and realm_type != row.type:
        raise AccessError(f"the type of realm '{realm}' cannot be changed (it is '{row.type}')")
    delete = list(delete)
    merged = {k: v for k, v in {**row.options, **(options or {})}.items() if k not in delete}
    row.options = _options(row.type, merged)
    if comment is not None:
        row.comment = _text("comment", comment)
    if default is not None:
        row.default = bool(default)
    if (password is not None or "password" in delete) and row.type not in ADDABLE_TYPES:
        raise AccessError(f"a realm of type '{row.type}' has no bind password")
    if version is not None:
        row.version = version
    _save(row, actor, f"changed realm '{realm}'", _password(password), "password" in delete)
    return row


def delete_realm(realm: str, *, actor: Any) -> None:
    """A realm without users, with its bind password and ACL entries; never ``pam`` or ``pve``."""
    row = Realm.objects.filter(realm=realm).first()
    if row is None:
        raise AccessError(f"domain '{realm}' does not exist")
    delegation.check(actor, "/access/realm", ["Realm.Allocate"])
    if realm in BUILTIN or row.type not in ADDABLE_TYPES:
        raise AccessError(f"cannot remove the built-in realm '{realm}'")
    if row.users.exists():
        raise AccessError(f"domain '{realm}' still has users")
    with transaction.atomic(using=CLUSTER):
        for entry in ACLEntry.objects.filter(path=f"/access/realm/{realm}"):
            entry.delete()
        key = KeyMaterial.objects.filter(path=password_path(realm)).first()
        if key is not None:
            key.delete()
        row.delete()
        audit.record(actor, f"removed realm '{realm}'")
