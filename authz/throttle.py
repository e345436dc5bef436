"""Login throttling: about 100 failures per hour per account, with a growing delay.

Counted per login name as typed (known or not, so unknown users get the same answers and the
same delays), node-local (a failed login must not cost a cluster-wide write), in the local
database so every process of the node shares the count. Logins are recorded in the cluster
log: every success, failures until the account's limit is reached, then one entry saying so.
"""

from __future__ import annotations

import time

from django.db import IntegrityError, transaction

WINDOW = 3600
LIMIT = 100
MAX_DELAY = 3.0


def _row(key: str):  # type: ignore[no-untyped-def]
    from authz.models import LoginFailures

    return LoginFailures.objects.filter(key=key[:255]).first()


def failures(key: str, now: float | None = None) -> int:
    now = time.time() if now is None else now
    row = _row(key)
    if row is None or now - row.window_start > WINDOW:
        return 0
    return row.count


def blocked(key: str) -> bool:
    """Over the limit: refuse without checking the password (the same answer as a wrong one)."""
    return failures(key) >= LIMIT


def delay_for(count: int) -> float:
    """No delay for the first few failures, then doubling up to MAX_DELAY seconds."""
    return 0.0 if count < 5 else min(MAX_DELAY, 0.05 * 2 ** ((count - 5) // 5))


def record_failure(key: str, now: float | None = None) -> int:
    """Count one failure; returns the count within the current window."""
    from authz.models import LoginFailures

    now = time.time() if now is None else now
    key = key[:255]
    with transaction.atomic(using="default"):
        row = LoginFailures.objects.select_for_update().filter(key=key).first()
        if row is None:
            try:
                LoginFailures.objects.create(key=key, count=1, window_start=int(now))
            except IntegrityError:
                return record_failure(key, now)
            return 1
        if now - row.window_start > WINDOW:
            row.count, row.window_start = 0, int(now)
        row.count += 1
        row.save(update_fields=["count", "window_start"])
        return row.count


def record_success(key: str) -> None:
    from authz.models import LoginFailures

    LoginFailures.objects.filter(key=key[:255]).delete()
