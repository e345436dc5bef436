"""LDAP realms: password checks through django-auth-ldap, configured per realm from its row, and realm sync.

A realm's options are Proxmox's (``domains.cfg``): ``server1``, ``server2``, ``port``, ``mode``
(``ldap``, ``ldaps``, ``ldap+starttls``), ``verify`` (certificate verification, on unless set to
0), ``capath`` (CA file), ``base_dn``, ``user_attr``, ``bind_dn``, ``filter``, ``user_classes``,
``group_dn``, ``group_name_attr``, ``group_filter``, ``group_classes``. The bind password is key
material at ``priv/realm/<realm>.pw``, never in ``domains.cfg``. Every connection has bounded
timeouts; every value put into a filter is escaped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import ldap
from django_auth_ldap.backend import LDAPBackend, ldap_error
from django_auth_ldap.config import LDAPSearch, LDAPSettings
from ldap.filter import escape_filter_chars

from authz.models import KeyMaterial, Realm, User

NETWORK_TIMEOUT = 5
OPERATION_TIMEOUT = 10
DEFAULT_USER_CLASSES = ("inetorgperson", "posixaccount", "person", "user")
DEFAULT_GROUP_CLASSES = ("groupofnames", "group", "univentiongroup", "ipausergroup")


class RealmConfigError(ValueError):
    """A realm row that cannot be used for LDAP."""


@dataclass(frozen=True)
class LDAPRealm:
    realm: str
    ad_domain: str  # Active Directory: users bind as <name>@<domain>; empty for plain LDAP
    uris: tuple[str, ...]
    starttls: bool
    verify: bool
    capath: str
    base_dn: str
    user_attr: str
    bind_dn: str
    bind_password: str
    user_filter: str
    user_classes: tuple[str, ...]
    group_dn: str
    group_name_attr: str
    group_filter: str
    group_classes: tuple[str, ...]

    def connection_options(self) -> dict[int, Any]:
        options: dict[int, Any] = {
            ldap.OPT_NETWORK_TIMEOUT: NETWORK_TIMEOUT,
            ldap.OPT_TIMEOUT: OPERATION_TIMEOUT,
            ldap.OPT_REFERRALS: 0,
            ldap.OPT_X_TLS_REQUIRE_CERT: ldap.OPT_X_TLS_DEMAND if self.verify else ldap.OPT_X_TLS_NEVER,
        }
        if self.capath:
            options[ldap.OPT_X_TLS_CACERTFILE] = self.capath
        options[ldap.OPT_X_TLS_NEWCTX] = 0  # last: applies the TLS options above to this connection
        return options


def config(realm: Realm) -> LDAPRealm:
    """The LDAP settings of a realm row (type ``ldap`` or ``ad``)."""
    if realm.type not in ("ldap", "ad"):
        raise RealmConfigError(f"realm '{realm.realm}' is not an LDAP or Active Directory realm")
    o = dict(realm.options or {})
    ad = realm.type == "ad"
    if ad:
        if not o.get("domain"):
            raise RealmConfigError(f"realm '{realm.realm}': option 'domain' is required")
        o.setdefault("base_dn", ",".join(f"DC={part}" for part in str(o["domain"]).split(".")))
        o.setdefault("user_attr", "sAMAccountName")
        o.setdefault("user_classes", "user")
        o.setdefault("group_classes", "group")
        o.setdefault("group_dn", o["base_dn"])
    for key in ("server1", "base_dn", "user_attr"):
        if not o.get(key):
            raise RealmConfigError(f"realm '{realm.realm}': option '{key}' is required")
    mode = o.get("mode", "ldaps" if str(o.get("secure", "0")) == "1" else "ldap")
    if mode not in ("ldap", "ldaps", "ldap+starttls"):
        raise RealmConfigError(f"realm '{realm.realm}': mode must be ldap, ldaps or ldap+starttls")
    scheme = "ldaps" if mode == "ldaps" else "ldap"
    port = o.get("port") or (636 if scheme == "ldaps" else 389)
    servers = [o["server1"], *([o["server2"]] if o.get("server2") else [])]
    password = KeyMaterial.objects.filter(path=f"priv/realm/{realm.realm}.pw").values_list("content", flat=True)
    return LDAPRealm(
        realm=realm.realm,
        ad_domain=str(o["domain"]) if ad else "",
        uris=tuple(f"{scheme}://{server}:{port}" for server in servers),
        starttls=mode == "ldap+starttls",
        verify=str(o.get("verify", "1")) != "0",
        capath=str(o.get("capath", "")),
        base_dn=str(o["base_dn"]),
        user_attr=str(o["user_attr"]),
        bind_dn=str(o.get("bind_dn", "")),
        bind_password=(password.first() or "").strip(),
        user_filter=str(o.get("filter", "")) + ("(!(objectClass=computer))" if ad else ""),
        user_classes=tuple(c.lower() for c in str(o.get("user_classes", "")).split(",") if c) or DEFAULT_USER_CLASSES,
        group_dn=str(o.get("group_dn", "")),
        group_name_attr=str(o.get("group_name_attr", "cn")),
        group_filter=str(o.get("group_filter", "")),
        group_classes=tuple(c.lower() for c in str(o.get("group_classes", "")).split(",") if c)
        or DEFAULT_GROUP_CLASSES,
    )


class RealmBackend(LDAPBackend):  # type: ignore[misc]  # django-auth-ldap has no type information
    """django-auth-ldap with settings built from one realm row, never from Django settings.

    Only users that exist in the realm (created by hand or by realm sync) may log in, as in
    Proxmox; the directory is never asked to create users here.
    """

    def __init__(self, cfg: LDAPRealm, uri: str) -> None:
        super().__init__()
        self.realm = cfg.realm
        user_filter = f"(&({cfg.user_attr}=%(user)s){cfg.user_filter})"
        self.settings = LDAPSettings(
            prefix="PVE_REALM_UNUSED_",
            defaults={
                "SERVER_URI": uri,
                "START_TLS": cfg.starttls,
                "BIND_DN": cfg.bind_dn,
                "BIND_PASSWORD": cfg.bind_password,
                # Active Directory: bind as the user's principal name, as Proxmox does
                "USER_SEARCH": None if cfg.ad_domain else LDAPSearch(cfg.base_dn, ldap.SCOPE_SUBTREE, user_filter),
                "USER_DN_TEMPLATE": f"%(user)s@{cfg.ad_domain}" if cfg.ad_domain else None,
                "CONNECTION_OPTIONS": cfg.connection_options(),
                "ALWAYS_UPDATE_USER": False,
                "NO_NEW_USERS": True,
                "PERMIT_EMPTY_PASSWORD": False,
            },
        )

    def get_or_build_user(self, username: str, ldap_user: Any) -> tuple[User, bool]:
        userid = f"{username}@{self.realm}"
        user = User.objects.filter(userid=userid).first()
        return (user, False) if user is not None else (User(userid=userid), True)


def authenticate(realm: Realm, username: str, password: str) -> bool:
    """Whether ``password`` binds as ``username`` (the name without ``@realm``) on any of the realm's servers."""
    if not password:
        return False
    cfg = config(realm)
    for uri in cfg.uris:
        errors: list[Exception] = []
        record = functools.partial(_record_error, errors)
        ldap_error.connect(record, weak=False)
        try:
            user = RealmBackend(cfg, uri).authenticate(None, username=username, password=password)
        finally:
            ldap_error.disconnect(record)
        if user is not None:
            return True
        if not any(isinstance(e, ldap.SERVER_DOWN | ldap.TIMEOUT | ldap.CONNECT_ERROR) for e in errors):
            return False  # the server answered: a wrong password is not retried elsewhere
    return False


def _record_error(
    errors: list[Exception], sender: Any, context: str = "", exception: Any = None, **kwargs: Any
) -> None:
    errors.append(exception)


# --- realm sync ------------------------------------------------------------------------------


def _connect(cfg: LDAPRealm) -> Any:
    last: Exception | None = None
    for uri in cfg.uris:
        conn = ldap.initialize(uri)
        for option, value in cfg.connection_options().items():
            conn.set_option(option, value)
        try:
            if cfg.starttls:
                conn.start_tls_s()
            conn.simple_bind_s(cfg.bind_dn, cfg.bind_password)
            return conn
        except (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR) as exc:
            last = exc
    raise RealmConfigError(f"cannot reach the realm's LDAP servers: {last}")


def _classes_filter(attr: str, classes: tuple[str, ...]) -> str:
    return "(|" + "".join(f"({attr}={escape_filter_chars(c)})" for c in classes) + ")"


def directory(realm: Realm) -> tuple[dict[str, dict[str, str]], dict[str, set[str]]]:
    """(users: name -> attributes, groups: name -> member names) as the directory has them."""
    cfg = config(realm)
    conn = _connect(cfg)
    try:
        user_filter = f"(&{_classes_filter('objectClass', cfg.user_classes)}{cfg.user_filter})"
        attrs = [cfg.user_attr, "givenName", "sn", "mail"]
        users: dict[str, dict[str, str]] = {}
        dn_to_name: dict[str, str] = {}
        for dn, entry in conn.search_s(cfg.base_dn, ldap.SCOPE_SUBTREE, user_filter, attrs):
            if not dn or cfg.user_attr not in entry:
                continue
            name = entry[cfg.user_attr][0].decode()
            users[name] = {k: entry[k][0].decode() for k in ("givenName", "sn", "mail") if k in entry}
            dn_to_name[dn.lower()] = name
        groups: dict[str, set[str]] = {}
        if cfg.group_dn:
            group_filter = f"(&{_classes_filter('objectClass', cfg.group_classes)}{cfg.group_filter})"
            for dn, entry in conn.search_s(
                cfg.group_dn, ldap.SCOPE_SUBTREE, group_filter, [cfg.group_name_attr, "member", "memberUid"]
            ):
                if not dn or cfg.group_name_attr not in entry:
                    continue
                members = {dn_to_name.get(m.decode().lower()) for m in entry.get("member", [])}
                members |= {m.decode() for m in entry.get("memberUid", [])}
                groups[entry[cfg.group_name_attr][0].decode()] = {m for m in members if m in users}
        return users, groups
    finally:
        conn.unbind_s()
