"""User, token, group, role, realm and pool ids: the one place they are checked and taken apart.

No Django, no I/O. PVE-INTERNALS §6.1, with restrictions Proxmox lacks: the name part of a
user id may not contain ``!``, which separates a user id from an API token's name, nor ``,``
or ``;``, which separate ids in lists (``user.cfg``, the API's ``users=a,b``), nor control or
bidi characters. Without the first, ``root@pam!a@pve`` (a user of realm ``pve``) and the token
``root@pam!a`` would share a prefix, and code that split at the wrong ``!`` acted as root@pam.
With it a token id has exactly one ``!``; a user id ends in ``@<realm>``, a token id in
``!<name>`` (a name has no ``@``), so the two can never be mistaken for each other.
"""

from __future__ import annotations

import re

from authz.exceptions import AccessError

USERID_MAX_LENGTH = 64
NAME_MAX_LENGTH = 64
REALM_PATTERN = r"[A-Za-z][A-Za-z0-9.\-_]+"
_USER_NAME_RE = re.compile(r"[^\s:/!,;]+")  # ',' and ';' separate the ids of a list (user.cfg, the API)
_REALM_RE = re.compile(REALM_PATTERN)
_TOKEN_NAME_RE = re.compile(REALM_PATTERN)  # Proxmox: a token name uses the realm pattern
_ID_RE = re.compile(r"[A-Za-z0-9.\-_]+")
_POOL_RE = re.compile(r"[A-Za-z0-9.\-_]+(/[A-Za-z0-9.\-_]+){0,2}")
POOL_PATTERN = _POOL_RE.pattern  # for API declarations


class InvalidId(AccessError):
    """A malformed id (HTTP 400); the message names it."""


def _printable(text: str) -> bool:
    """No control, format (bidi overrides) or unassigned characters."""
    return text.isprintable()


def split_userid(userid: object) -> tuple[str, str]:
    """``(name, realm)`` of a valid ``name@realm``, else InvalidId."""
    if not isinstance(userid, str) or not 0 < len(userid) <= USERID_MAX_LENGTH:
        raise InvalidId(f"invalid user id '{userid}'")
    name, sep, realm = userid.rpartition("@")
    if not sep or _USER_NAME_RE.fullmatch(name) is None or _REALM_RE.fullmatch(realm) is None or not _printable(name):
        raise InvalidId(f"invalid user id '{userid}'")
    return name, realm


def check_userid(userid: object) -> str:
    split_userid(userid)
    return str(userid)


def is_valid_userid(userid: object) -> bool:
    try:
        split_userid(userid)
    except InvalidId:
        return False
    return True


def login_userid(username: str, realm: str | None) -> str:
    """The user id a login means: a name typed with its realm wins over the realm chooser (Proxmox's GUI)."""
    return username if not realm or "@" in username else f"{username}@{realm}"


def check_token_name(name: object) -> str:
    if not isinstance(name, str) or len(name) > NAME_MAX_LENGTH or _TOKEN_NAME_RE.fullmatch(name) is None:
        raise InvalidId(f"invalid token name '{name}'")
    return name


def split_tokenid(tokenid: object) -> tuple[str, str]:
    """``(userid, name)`` of a valid ``user@realm!name``, else InvalidId."""
    if not isinstance(tokenid, str):
        raise InvalidId(f"invalid token id '{tokenid}'")
    userid, sep, name = tokenid.partition("!")
    try:
        if not sep:
            raise InvalidId(tokenid)
        split_userid(userid)
        check_token_name(name)
    except InvalidId:
        raise InvalidId(f"invalid token id '{tokenid}'") from None
    return userid, name


def split_principal(principal: str) -> tuple[str, str]:
    """``(user id, token name or "")`` of a principal as recorded (a UPID's user field, a log entry).

    No validation (a recorded name is reported as it is); the one ``!`` a valid principal can have
    separates the two parts. Resolving a live token goes through its row instead.
    """
    userid, _sep, name = principal.partition("!")
    return userid, name


def make_tokenid(userid: str, name: str) -> str:
    """``<userid>!<name>``, both parts checked."""
    check_userid(userid)
    check_token_name(name)
    return f"{userid}!{name}"


def is_valid_tokenid(tokenid: object) -> bool:
    try:
        split_tokenid(tokenid)
    except InvalidId:
        return False
    return True


def _simple(kind: str, value: object, pattern: re.Pattern[str] = _ID_RE) -> str:
    if not isinstance(value, str) or len(value) > NAME_MAX_LENGTH or pattern.fullmatch(value) is None:
        raise InvalidId(f"invalid {kind} '{value}'")
    return value


def check_group_id(groupid: object) -> str:
    return _simple("group id", groupid)


def is_valid_group_id(groupid: object) -> bool:
    try:
        check_group_id(groupid)
    except InvalidId:
        return False
    return True


def check_role_id(roleid: object) -> str:
    return _simple("role id", roleid)


def check_pool_id(poolid: object) -> str:
    return _simple("pool id", poolid, _POOL_RE)


def check_realm_id(realm: object) -> str:
    if not isinstance(realm, str) or len(realm) > 32 or _REALM_RE.fullmatch(realm) is None:
        raise InvalidId(f"invalid realm '{realm}'")
    return realm
