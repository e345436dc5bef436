"""Login throttling: a growing, bounded delay per login name and per client address, cluster-wide.

No lock-out: the right password is always accepted, after at most ``ADDRESS_MAX_DELAY`` seconds.
Before a password is checked the attempt waits :func:`delay`: nothing for the first
``FREE_FAILURES`` failures of its name or address within ``WINDOW``, then ``FIRST_DELAY``,
doubling every 5 failures, up to ``USER_MAX_DELAY`` for the name (what a user under attack waits
from a clean address) and ``ADDRESS_MAX_DELAY`` for the address. One attempt at a time per
address and node (``authz.login_gate``), so one address gets about 3600 / 30 = 120 guesses an
hour per node once its delay is at the cap; many addresses get more, but each its own delay.

Counting: each node counts the failures it answers in its local database (``LoginFailures``,
one row per ``user:<name>`` and ``address:<address>``): a failed login is never a replicated
write. Its replicator publishes the node's largest counts in the volatile status every
``PVE_STATUS_INTERVAL`` seconds (:func:`volatile_status`), and :func:`failures` adds the other
nodes' published counts to this node's own. A node thus sees another node's failures at most
about one status interval late (eventually consistent; that is the bound). When the local
replicator cannot say what the others counted, at least ``UNKNOWN_DELAY`` is waited (fail safe).

Memory and rows are bounded: at most ``PUBLISHED`` names and addresses per node in the status,
at most ``MAX_ROWS`` rows locally (the smallest, oldest counts go first), expired rows purged by
the ``authz.purge_login_failures`` task.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.db.models import F

from authz import ids

log = logging.getLogger(__name__)

WINDOW = 3600
FREE_FAILURES = 5
FIRST_DELAY = 0.5
FAILURES_PER_STEP = 5
USER_MAX_DELAY = 10.0
ADDRESS_MAX_DELAY = 30.0
UNKNOWN_DELAY = 3.0
PUBLISHED = 64
MAX_ROWS = 10_000
STATUS_FIELD = "login_failures"
STATUS_TIMEOUT = 2.0
USER_PREFIX, ADDRESS_PREFIX = "user:", "address:"
_KEY_MAX = 255
_warned_at = -3600.0


@dataclass(frozen=True)
class Attempt:
    """One password login: the name as typed (``name@realm``) and the client's address key."""

    user: str
    address: str

    @classmethod
    def of(cls, name: str, rhost: str) -> Attempt:
        return cls(name[: _KEY_MAX - len(USER_PREFIX)], address_key(rhost))


def login_name(username: str, realm: str | None) -> str:
    """``name@realm`` as the login is counted: known or not, so unknown names get the same delays."""
    return ids.login_userid(username, realm)


def address_key(rhost: str) -> str:
    """The client's address; an IPv6 client counts by its /64 (one host usually owns a whole /64)."""
    try:
        address = ipaddress.ip_address(rhost)
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def schedule(count: int, cap: float) -> float:
    """The delay after ``count`` failures: none for the first few, then doubling up to ``cap``."""
    if count < FREE_FAILURES:
        return 0.0
    steps = min((count - FREE_FAILURES) // FAILURES_PER_STEP, 32)
    delay: float = FIRST_DELAY * 2**steps
    return min(cap, delay)


def _local_counts(keys: list[str], now: float) -> dict[str, int]:
    from authz.models import LoginFailures

    rows = LoginFailures.objects.filter(key__in=keys, window_start__gt=now - WINDOW)
    return dict(rows.values_list("key", "count"))


def _published_count(table: Any, key: str) -> int:
    value = table.get(key, 0) if isinstance(table, dict) else 0
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def remote_counts(attempt: Attempt, now: float) -> tuple[int, int] | None:
    """The other nodes' published failures of the attempt's name and address; None if unknown."""
    from replicator import client
    from replicator.exceptions import ReplicationError

    global _warned_at
    try:
        answer = client.request({"op": "cluster_status", "fields": [STATUS_FIELD]}, timeout=STATUS_TIMEOUT)
    except ReplicationError as exc:
        if time.monotonic() - _warned_at > 60:  # once a minute, not once per (attacker's) attempt
            _warned_at = time.monotonic()
            log.warning("login throttling without the other nodes' counts (delaying every login): %s", exc)
        return None
    user = address = 0
    for node, status in (answer.get("nodes") or {}).items():
        if node == settings.PVE_NODE_NAME or not isinstance(status, dict):
            continue  # this node's own counts are read fresh from its database
        received = status.get("received")
        if not isinstance(received, int | float) or now - received > WINDOW:
            continue
        published = status.get(STATUS_FIELD)
        if isinstance(published, dict):
            user += _published_count(published.get("user"), attempt.user)
            address += _published_count(published.get("address"), attempt.address)
    return user, address


def failures(attempt: Attempt, now: float | None = None) -> tuple[int, int, bool]:
    """Failures of the attempt's name and address within the window, cluster-wide; and whether
    the other nodes' counts were known."""
    now = time.time() if now is None else now
    user_key, address_key_ = USER_PREFIX + attempt.user, ADDRESS_PREFIX + attempt.address
    local = _local_counts([user_key, address_key_], now)
    remote = remote_counts(attempt, now)
    user, address = local.get(user_key, 0), local.get(address_key_, 0)
    if remote is None:
        return user, address, False
    return user + remote[0], address + remote[1], True


def delay(attempt: Attempt, now: float | None = None) -> float:
    """Seconds to wait before checking this attempt's password (bounded; never a refusal)."""
    user, address, known = failures(attempt, now)
    wait = max(schedule(user, USER_MAX_DELAY), schedule(address, ADDRESS_MAX_DELAY))
    return wait if known else max(wait, UNKNOWN_DELAY)


def _increment(key: str, now: float) -> int:
    """Add one failure to ``key``'s count (a new window once the last one is over).

    Single UPDATE statements, no read-then-write transaction: concurrent failures are all
    counted, and SQLite waits for the lock instead of failing a writer whose snapshot is old.
    """
    from authz.models import LoginFailures

    rows = LoginFailures.objects.filter(key=key)
    counted = rows.filter(window_start__gt=now - WINDOW).update(count=F("count") + 1)
    if not counted and not rows.update(count=1, window_start=int(now)):  # no row: a new one
        if LoginFailures.objects.count() >= MAX_ROWS:
            purge(now)
        try:
            LoginFailures.objects.create(key=key, count=1, window_start=int(now))
        except IntegrityError:
            return _increment(key, now)  # created meanwhile by another request
    return rows.values_list("count", flat=True).first() or 1


def record_failure(attempt: Attempt, now: float | None = None) -> tuple[int, int]:
    """Count a failure of the name and of the address on this node; returns both local counts."""
    now = time.time() if now is None else now
    return _increment(USER_PREFIX + attempt.user, now), _increment(ADDRESS_PREFIX + attempt.address, now)


def record_success(attempt: Attempt) -> None:
    """The user proved the password: their name's count ends (the address keeps its count, or an
    attacker could clear it by logging in to an account of their own)."""
    from authz.models import LoginFailures

    LoginFailures.objects.filter(key=USER_PREFIX + attempt.user).delete()


def purge(now: float | None = None) -> int:
    """Delete expired rows, then the smallest, oldest counts beyond MAX_ROWS; returns rows deleted."""
    from authz.models import LoginFailures

    now = time.time() if now is None else now
    deleted, _ = LoginFailures.objects.filter(window_start__lte=now - WINDOW).delete()
    remaining = LoginFailures.objects.count()
    if remaining >= MAX_ROWS:  # down to 90 %, so a flood of new names does not purge at every row
        excess = remaining - MAX_ROWS * 9 // 10
        victims = list(LoginFailures.objects.order_by("count", "window_start").values_list("key", flat=True)[:excess])
        deleted += LoginFailures.objects.filter(key__in=victims).delete()[0]
    return deleted


def _largest(prefix: str, now: float) -> dict[str, int]:
    from authz.models import LoginFailures

    rows = LoginFailures.objects.filter(key__startswith=prefix, window_start__gt=now - WINDOW)
    return {key[len(prefix) :]: count for key, count in rows.order_by("-count").values_list("key", "count")[:PUBLISHED]}


def volatile_status() -> dict[str, Any]:
    """What this node publishes to the others: its largest failure counts by name and address."""
    now = time.time()
    return {STATUS_FIELD: {"user": _largest(USER_PREFIX, now), "address": _largest(ADDRESS_PREFIX, now)}}
