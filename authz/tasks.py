"""Celery tasks of the access-control app, run by every node's beat (``CELERY_BEAT_SCHEDULE``)."""

from __future__ import annotations

import logging
import time

from authz import services, throttle
from portal.celery import app
from replicator.exceptions import ReplicationError

log = logging.getLogger(__name__)


@app.task(name="authz.rotate_authkey")
def rotate_authkey() -> bool:
    """Rotate the ticket signing key once it is due, on schedule rather than at the next login.

    Every node runs this: the first rotation wins, the others conflict and keep the winner's key.
    Without quorum nothing rotates and the key stays valid, as in Proxmox.
    """
    try:
        rotated = services.rotate_authkey_if_due(int(time.time()))
    except ReplicationError as exc:
        log.info("ticket key rotation postponed: %s", exc)
        return False
    if rotated:
        log.info("ticket signing key rotated")
    return rotated


@app.task(name="authz.purge_login_failures")
def purge_login_failures() -> int:
    """Drop this node's expired failed-login counts (and the smallest beyond the row limit)."""
    return throttle.purge()
