"""Celery tasks of the VM app, run by every node's beat (``CELERY_BEAT_SCHEDULE``)."""

from __future__ import annotations

from portal.celery import app
from vms.jobs import scheduler


@app.task(name="vms.run_backup_jobs")
def run_backup_jobs() -> list[str]:
    """Start this node's due scheduled backups (pvescheduler's minute tick)."""
    return scheduler.run_due_jobs()
