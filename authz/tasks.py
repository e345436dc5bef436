"""Celery tasks of the access-control app, run by every node's beat (``CELERY_BEAT_SCHEDULE``)."""

from __future__ import annotations

from authz import throttle
from portal.celery import app


@app.task(name="authz.purge_login_failures")
def purge_login_failures() -> int:
    """Drop this node's expired failed-login counts (and the smallest beyond the row limit)."""
    return throttle.purge()
