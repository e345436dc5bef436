"""Authentication: passwords (by realm), logins, cluster-signed tickets, CSRF prevention tokens, API tokens."""

from __future__ import annotations

import contextlib
import functools
import logging
import time

from django.contrib.auth.hashers import check_password, make_password
from django.db import DatabaseError

from authz import ids, tickets
from authz.exceptions import AuthenticationFailed
from authz.models import KeyMaterial, User
from authz.services.keys import AUTHKEY, AUTHKEY_PUB, AUTHKEY_PUB_OLD, WWW_KEY, rotate_authkey_if_due
from replicator.exceptions import ReplicationError

log = logging.getLogger(__name__)


@functools.cache
def _dummy_hash() -> str:
    """A password hash to check unknown users against (same work, same answer); made on first use,
    not at import: hashing costs about half a second, which every process start would pay."""
    return make_password("not-a-real-password-used-for-timing")


@functools.cache
def _dummy_token_hash() -> str:
    return tickets.hash_token_secret("00000000-0000-0000-0000-000000000000")


def _key(path: str) -> bytes | None:
    content = KeyMaterial.objects.filter(path=path).values_list("content", flat=True).first()
    return content.encode() if content is not None else None


def _require_key(path: str) -> bytes:
    key = _key(path)
    if key is None:
        raise AuthenticationFailed("cluster keys not initialised yet")
    return key


def user_from_api_token(tokenid: str, secret: str) -> User | None:
    """The token's enabled user if the token exists, is unexpired and the secret matches; else None."""
    from authz.models import APIToken

    token = APIToken.objects.filter(tokenid=tokenid).select_related("user").first()
    if token is None:
        tickets.verify_token_secret(secret, _dummy_token_hash())  # same work for unknown tokens
        return None
    if not tickets.verify_token_secret(secret, token.secret_hash):
        return None
    if (token.expire and token.expire <= time.time()) or not token.user.is_active:
        return None
    return token.user


def active_user(userid: str) -> User:
    """The enabled, unexpired user ``userid``, or AuthenticationFailed."""
    user = User.objects.filter(userid=userid).first()
    if user is None or not user.is_active:
        raise AuthenticationFailed()
    return user


SUPERUSER_ID = "root@pam"
PAM_SERVICE = "pve-django-auth"  # not shipped: PAM falls back to /etc/pam.d/other unless the operator adds it


def _pam_authenticate(name: str, password: str) -> bool:
    """Linux accounts through PAM (``pam`` realm users other than root@pam, whose password is ours)."""
    import pam

    if not password or "\0" in password or "\0" in name:
        return False
    return bool(pam.pam().authenticate(name, password, service=PAM_SERVICE))


def _check_local_password(user: User | None, password: str) -> User:
    """A password against the hash this cluster keeps (the ``pve`` realm and root@pam)."""
    if user is None or not user.password:
        check_password(password, _dummy_hash())  # same work for unknown users
        raise AuthenticationFailed()
    if not check_password(password, user.password) or not user.is_active:
        raise AuthenticationFailed()
    return user


def authenticate_password(username: str, password: str, realm: str | None = None) -> User:
    """Check a password with the method of the user's realm type; one error for every failure.

    root@pam is checked against its own hash before any realm row is looked at, so no realm
    setting (a ``pam`` realm made to look like LDAP, say) can ever decide root@pam's login.
    """
    userid = ids.login_userid(username, realm)
    if userid == SUPERUSER_ID:
        return _check_local_password(User.objects.filter(userid=SUPERUSER_ID).first(), password)
    user = User.objects.filter(userid=userid).select_related("realm").first() if ids.is_valid_userid(userid) else None
    kind = user.realm.type if user is not None else ""
    if user is not None and kind in ("ldap", "ad"):
        from authz import ldap_realm

        name, _realm = ids.split_userid(user.userid)
        if not user.is_active or not ldap_realm.authenticate(user.realm, name, password):
            raise AuthenticationFailed()
        return user
    if user is not None and kind == "pam" and user.realm_id == "pam":
        name, _realm = ids.split_userid(user.userid)
        if not user.is_active or not _pam_authenticate(name, password):
            raise AuthenticationFailed()
        return user
    return _check_local_password(
        user if user is not None and kind == "pve" and user.realm_id == "pve" else None, password
    )


def _printable(text: str, limit: int = 128) -> str:
    """A user-supplied value as it may appear in a log line (no newlines, no control characters)."""
    return text[:limit].encode("unicode_escape").decode("ascii")


def login(username: str, password: str, realm: str | None = None, *, rhost: str = "") -> User:
    """A password login, throttled (``authz.throttle``); one error for every failure.

    Failures go to this node's log only: an unauthenticated request never causes a replicated
    write. A success is also recorded in the cluster log (one cheap write, after the password).
    """
    from authz import login_gate, throttle
    from portal import audit

    name = throttle.login_name(username, realm)
    attempt = throttle.Attempt.of(name, rhost)
    if not login_gate.passed(attempt):  # a caller that did not wait at the web's gate waits here
        time.sleep(throttle.delay(attempt))
    try:
        user = authenticate_password(username, password, realm)
    except AuthenticationFailed:
        try:
            throttle.record_failure(attempt)
        except DatabaseError:
            log.exception("could not count a failed login")
        log.warning("authentication failure; rhost=%s user=%s", _printable(rhost or "-"), _printable(name))
        raise
    throttle.record_success(attempt)
    where = f" from {rhost}" if rhost else ""
    log.info("successful auth for user '%s'%s", user.userid, _printable(where))
    with contextlib.suppress(ReplicationError):  # a read-only cluster still answers logins
        audit.record(user.userid, f"successful auth for user '{user.userid}'{where}")
    return user


def issue_ticket(user: User, *, now: int | None = None) -> tuple[str, str]:
    """A ticket and CSRF prevention token for ``user``, valid on every node of the cluster."""
    now = int(time.time()) if now is None else now
    with contextlib.suppress(ReplicationError):  # read-only cluster: keep signing with the current key
        rotate_authkey_if_due(now)
    ticket = tickets.create_ticket(user.userid, _require_key(AUTHKEY), now=now)
    csrf = tickets.create_csrf_token(user.userid, csrf_secret(), now=now)
    return ticket, csrf


def csrf_secret() -> bytes:
    return tickets.csrf_secret(_require_key(WWW_KEY))


TICKET_LIFETIME = 7200
TICKET_GRACE = 300  # clock skew tolerated between the node that issued a ticket and the one checking it


def ticket_age_range(now: int, key_created: int, *, rotated: bool) -> tuple[int, int] | None:
    """The ages (exclusive) a ticket signed with a key may have; None if the key signs nothing valid.

    Proxmox's rule (``get_ticket_age_range``): a ticket is valid for 2 h with 5 min of skew; the
    current key accepts no ticket older than itself; the previous key (``rotated``, created at the
    rotation) accepts only tickets issued before the rotation. A key left overdue because the
    cluster had no quorum stays valid, as in Proxmox; a quorate cluster rotates it on schedule.
    """
    key_age = max(0, now - key_created)
    low, high = -TICKET_GRACE, TICKET_LIFETIME
    if rotated:
        low = key_age - TICKET_GRACE
    elif key_age < TICKET_LIFETIME:
        high = key_age + TICKET_GRACE
    return None if low > TICKET_LIFETIME else (low, high)


def user_from_ticket(ticket: str, *, now: int | None = None) -> User:
    """Verify a ticket against the current public key, then the previous one, each with its age range."""
    now = int(time.time()) if now is None else now
    found = {key.path: key for key in KeyMaterial.objects.filter(path__in=(AUTHKEY_PUB, AUTHKEY_PUB_OLD))}
    for path, rotated in ((AUTHKEY_PUB, False), (AUTHKEY_PUB_OLD, True)):
        key = found.get(path)
        ages = ticket_age_range(now, key.created, rotated=rotated) if key is not None else None
        if key is None or ages is None:
            continue
        try:
            userid = tickets.verify_ticket(ticket, [key.content.encode()], now=now, min_age=ages[0], max_age=ages[1])
        except tickets.TicketError:
            continue
        return active_user(userid)
    raise AuthenticationFailed("invalid ticket")


def check_csrf(token: str, userid: str, *, now: int | None = None) -> bool:
    now = int(time.time()) if now is None else now
    return tickets.verify_csrf_token(token, userid, csrf_secret(), now=now)
